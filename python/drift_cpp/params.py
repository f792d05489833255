"""Generation parameters, defined once: the Python API, the CLI options and the native engine read them.

The CLI derives its sampling options from Sampling's fields (their defaults and help), so a
default changed here changes everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .errors import DriftError

DEFAULT_BETA = 0.5  # the paper's strength of personalization is 1/beta


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class Sampling:
    temperature: float = field(default=0.8, metadata=_help("0: greedy."))
    top_p: float = field(default=0.9, metadata=_help("Nucleus sampling (the paper's 0.9); 1: off."))
    top_k: int = field(default=0, metadata=_help("0: off."))
    min_p: float = field(default=0.0, metadata=_help("0: off."))
    seed: int = field(default=0, metadata=_help("Sampling seed."))
    max_tokens: int = field(default=500, metadata=_help("Most tokens an answer has (the paper's text_length)."))
    stop: Sequence[str] = field(default=(), metadata=_help("Stop string (repeatable)."))

    def check(self) -> None:
        if self.max_tokens < 0:
            raise DriftError("max_tokens cannot be negative")
        if self.temperature < 0:
            raise DriftError("temperature cannot be negative")
        if not 0 < self.top_p <= 1:
            raise DriftError("top_p must be in (0, 1]")
        if self.top_k < 0 or not 0 <= self.min_p <= 1:
            raise DriftError("top_k must be >= 0 and min_p in [0, 1]")


@dataclass(frozen=True)
class EngineOptions:
    n_ctx: int = field(default=2048, metadata=_help("KV cells per sequence."))
    n_batch: int = field(default=512, metadata=_help("Most tokens one llama_decode takes while reading a prompt."))


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise DriftError("beta must be positive")
