"""How a profile is fitted: the options every caller (Python API, CLI, server) shares, checked in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from . import approximation, choice
from ..errors import DriftError
from ..params import DEFAULT_MAX_RESPONSE_TOKENS, DEFAULT_TOP
from ..score.scorer import check_max_response_tokens

NORMALIZE = ("sum", "mean")


@dataclass(frozen=True)
class FitOptions:
    top: int = DEFAULT_TOP      # attributes used for decoding (paper: 7)
    normalize: str = "sum"      # "sum": summed log-ratio (paper); "mean": per response token
    method: str = approximation.DEFAULT_METHOD  # "qp": the paper's closed form; "logistic", "bt": regressions
    l2: float = approximation.DEFAULT_L2        # penalty of "logistic" and "bt"
    family: str = choice.AUTO   # "auto": every family in one shrunk fit (choice.py); or e.g. "attributes+length"
    # Response tokens scored (0: all). Profile.fit records its scorer's; updates must score alike.
    max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS

    def check(self, name: Callable[[str], str] = lambda key: f"--{key}") -> None:
        """The one place these values are checked; `name` says how errors name an option."""
        if self.normalize not in NORMALIZE:
            raise DriftError(f"{name('normalize')}: unknown normalization '{self.normalize}' (choose sum or mean)")
        if self.method not in approximation.METHODS:
            raise DriftError(f"{name('method')}: unknown method '{self.method}' "
                             f"(choose {', '.join(approximation.METHODS)})")
        if self.top < 1:
            raise DriftError(f"{name('top')} must be at least 1, got {self.top}")
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise DriftError(f"{name('l2')} must be a positive finite number, got {self.l2!r}")
        try:
            check_max_response_tokens(self.max_response_tokens)
        except DriftError as e:
            raise DriftError(f"{name('max_response_tokens')}: {e}") from None
        choice.parse_family(self.family, name("family"))
