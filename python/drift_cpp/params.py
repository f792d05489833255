"""Generation parameters, defined once: the Python API, the CLI options and the native engine read them.

The CLI derives its sampling options from Sampling's fields (their defaults and help), so a
default changed here changes everywhere.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .errors import DriftError
from .fileio import check_utf8

DEFAULT_BETA = 0.5  # the paper's strength of personalization is 1/beta
# The fit: Bradley-Terry with this l2 beat the paper's closed form in cross-validation on DSP
# (docs/results.md, "Defaults by evidence").
DEFAULT_METHOD = "bt"
DEFAULT_L2 = 1000.0  # on the summed loss over pairs and 'sum'-normalized features
# The server: requests decoded together, and the largest request body it reads (HTTP 413 above it).
DEFAULT_SLOTS = 4
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
# The valid beta, for the CLI, chat's /beta and Drift alike. The engine adds (p_i / beta) * h to the
# logits in float32: with |p_i| <= 1, at most 41 attributes and logits far below 1e4 in size, 1/beta
# <= 1e6 keeps every term below 1e12, far from float32's 3.4e38; the top is the largest float32 power of ten.
BETA_RANGE = (1e-6, 1e38)
FLOAT32_MAX = 3.4028234663852886e38
INT32_MAX = 2**31 - 1  # the engine's ints (max_tokens, top_k, n_ctx)
# A profile learned from use (chat's picks, the server's /v1/preferences) steers decoding from this many
# pairs on; below it decoding stays plain: the smallest number of pairs the DSP evaluation measured,
# where the default fit already beats the length baseline (docs/results.md, "How well do a few pairs
# predict a person's choices?").
MIN_PROFILE_PAIRS = 5
# How chat's --learn and /ab make their two answers (steer/questions.py), and how many candidates the
# active strategy draws. Chosen by experiments/learning_loop.py: docs/results.md, "Learning from picks".
QUESTIONS = ("personalized", "samples", "betas", "active", "informative")
DEFAULT_QUESTIONS = "personalized"
ACTIVE_CANDIDATES = 4
# A learned profile has settled when each of its last SETTLE_PICKS picks moved its predicted preference
# on the earlier pairs by less than SETTLE_TOL on average (fit/learning.change).
SETTLE_PICKS, SETTLE_TOL = 3, 0.05
# The plausibility guard of steered formulas (contrastive decoding's adaptive plausibility constraint):
# only tokens with p_LLM >= alpha * max p_LLM may be chosen. Provisional until the study in
# docs/results.md ("Does personalization keep the answer?") chooses it.
DEFAULT_PLAUSIBILITY = 0.1
# The trust region: steering scaled so that KL(fused || LLM) <= this many nats per step; 0: off.
DEFAULT_MAX_KL = 0.0
# Attributes that steer decoding (the paper's m = 7).
DEFAULT_TOP = 7
# How a joint profile's attribute weights steer (fit/profile.py, Profile.attribute_scale): "unit", the
# paper's unit-norm direction whatever its share of the joint model, or "joint", the joint fit's own
# coefficients, in the units of the margin its length and word weights share. "joint" by the rule of
# experiments/decoding_units.py on development prompts (docs/results.md, "Decoding in the units of the
# profile"): the only admissible setting there. The win rates of the shorter- and longer-answer persons
# were the same as with "unit" (0.94, 0.50), while "unit" looped 3 times and cost NLL 1.27x plain against
# 1.03x: after 20 picks the joint attribute coefficients have norm ~0.02, a share the unit norm inflated 40x.
ATTRIBUTE_UNITS = ("unit", "joint")
DEFAULT_ATTRIBUTE_UNITS = "joint"
# Response tokens a fit (approximate, evaluate) scores by default; 0 scores whole responses.
# Chosen on DSP by accuracy against cost: docs/screening.md, "Truncation".
DEFAULT_MAX_RESPONSE_TOKENS = 64


def check_beta(beta: float, name: str = "beta") -> float:
    """The one check of beta; returns it as a float. `name` is how the error names it."""
    low, high = BETA_RANGE
    if not (_real(beta) and low <= beta <= high):
        raise DriftError(f"{name} must be positive and within [{low:g}, {high:g}], got {beta!r}")
    return float(beta)


def check_finite(x, name: str) -> float:
    if not is_number(x):
        raise DriftError(f"{name} must be a finite number, got {x!r}")
    return float(x)


# The largest weight of a profile in a blend, and the largest CFG scale: ten times a profile's own steering
# is far past where the answers stay language (docs/results/demo_settings); beyond it lies only noise.
MAX_SCALE = 10.0


def check_scale(x, name: str) -> float:
    """A blend weight or a CFG scale: finite and within +-MAX_SCALE."""
    check_finite(x, name)
    if abs(x) > MAX_SCALE:
        raise DriftError(f"{name} is {x:g}; beyond +-{MAX_SCALE:g} the steering drowns the LLM's own logits")
    return float(x)


def check_guard(plausibility, max_kl, names=("plausibility", "max_kl")) -> None:
    """The one check of the guard's two numbers; `names` is how the error names them."""
    if not (_real(plausibility) and 0 <= plausibility < 1):
        raise DriftError(f"{names[0]} must be in [0, 1) (0: off), got {plausibility!r}")
    if not (is_number(max_kl) and max_kl >= 0):
        raise DriftError(f"{names[1]} must be a finite number >= 0 (0: off), got {max_kl!r}")


# The longest length target (words) a formula may carry: far beyond any answer a context holds.
MAX_LENGTH_TARGET = 1e6


def check_length_target(target, name: str = "length_target") -> float:
    if not (is_number(target) and 0 <= target <= MAX_LENGTH_TARGET):
        raise DriftError(f"{name} must be a number of words in [0, {MAX_LENGTH_TARGET:g}] (0: none), got {target!r}")
    return float(target)


def check_top_attributes(top: Optional[int]) -> None:
    if top is not None and not (_integer(top) and top >= 1):
        raise DriftError(f"top_attributes must be at least 1, got {top!r}")


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    """The one test of a number, in files and options alike: real (not a bool), finite, and within what the
    engine holds in a float32."""
    return _real(x) and math.isfinite(x) and abs(x) <= FLOAT32_MAX


def _help(text: str) -> dict:
    return {"help": text}


# OpenAI's range of a logit_bias; -100 keeps a token out.
LOGIT_BIAS_RANGE = (-100.0, 100.0)


@dataclass
class Sampling:
    temperature: float = field(default=0.8, metadata=_help("0: greedy."))
    top_p: float = field(default=0.9, metadata=_help("Nucleus sampling (the paper's 0.9); 1: off."))
    top_k: int = field(default=0, metadata=_help("0: off."))
    min_p: float = field(default=0.0, metadata=_help("0: off."))
    seed: int = field(default=0, metadata=_help("Sampling seed."))
    max_tokens: int = field(default=500, metadata=_help("Most tokens an answer has (the paper's text_length)."))
    stop: Sequence[str] = field(default=(), metadata=_help("Stop string (repeatable)."))
    # llama.cpp's anti-repetition samplers, applied to the fused logits.
    repeat_penalty: float = field(default=1.0, metadata=_help("Repetition penalty over the last penalty_last_n "
                                                               "tokens; 1: off."))
    frequency_penalty: float = field(default=0.0, metadata=_help("OpenAI's frequency penalty, in [-2, 2]; 0: off."))
    presence_penalty: float = field(default=0.0, metadata=_help("OpenAI's presence penalty, in [-2, 2]; 0: off."))
    penalty_last_n: int = field(default=64, metadata=_help("Tokens the three penalties look back over."))
    dry_multiplier: float = field(default=0.0, metadata=_help("DRY (don't repeat yourself) strength; 0: off."))
    dry_base: float = field(default=1.75, metadata=_help("DRY's growth per repeated token (>= 1)."))
    dry_allowed_length: int = field(default=2, metadata=_help("Repeats DRY lets pass unpenalized, in tokens."))
    dry_penalty_last_n: int = field(default=-1, metadata=_help("Tokens DRY looks back over; -1: the whole context."))
    # Per request, not command-line options of their own (generate reads a grammar from --grammar or
    # --json-schema FILE). Both act on the fused logits: engine.h.
    logit_bias: Sequence[tuple[int, float]] = field(default=(), metadata={"cli": False})  # (token, bias)
    grammar: str = field(default="", metadata={"cli": False})  # GBNF with a "root" rule; "": none

    def check(self) -> None:
        """The one place sampling settings are validated; the CLI calls it before loading any model."""
        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty",
                     "dry_multiplier", "dry_base"):
            check_finite(getattr(self, name), name)
        for name in ("top_k", "seed", "max_tokens", "penalty_last_n", "dry_allowed_length", "dry_penalty_last_n"):
            if not _integer(getattr(self, name)):
                raise DriftError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.max_tokens <= INT32_MAX:
            raise DriftError(f"max_tokens cannot be negative (or above {INT32_MAX}), got {self.max_tokens}")
        if self.temperature < 0:
            raise DriftError("temperature cannot be negative")
        if not 0 < self.top_p <= 1:
            raise DriftError("top_p must be in (0, 1]")
        if not 0 <= self.top_k <= INT32_MAX or not 0 <= self.min_p <= 1:
            raise DriftError("top_k must be >= 0 and min_p in [0, 1]")
        if not 0 <= self.seed < 2**32:
            raise DriftError(f"seed must be in [0, 2**32), got {self.seed}")
        if not self.repeat_penalty > 0:
            raise DriftError(f"repeat_penalty must be positive (1: off), got {self.repeat_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise DriftError(f"{name} must be in [-2, 2], as OpenAI's, got {getattr(self, name)}")
        if not (self.dry_multiplier >= 0 and self.dry_base >= 1):
            raise DriftError("dry_multiplier must be >= 0 (0: off) and dry_base >= 1")
        if not (0 <= self.penalty_last_n <= INT32_MAX and 1 <= self.dry_allowed_length <= INT32_MAX
                and -1 <= self.dry_penalty_last_n <= INT32_MAX):
            raise DriftError("penalty_last_n must be >= 0, dry_allowed_length >= 1 and dry_penalty_last_n >= -1")
        low, high = LOGIT_BIAS_RANGE
        for pair in self.logit_bias:
            if not (isinstance(pair, tuple) and len(pair) == 2 and _integer(pair[0]) and pair[0] >= 0
                    and _real(pair[1]) and low <= pair[1] <= high):
                raise DriftError(f"logit_bias maps token ids to biases in [{low:g}, {high:g}], got {pair!r}")
        if not isinstance(self.grammar, str):
            raise DriftError(f"grammar must be a string, got {type(self.grammar).__name__}")
        check_utf8(self.grammar, "the grammar")
        if isinstance(self.stop, str):
            raise DriftError("stop must be a list of strings, not one string")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise DriftError(f"stop strings must be non-empty strings, got {s!r}")
            check_utf8(s, f"stop string {s!r}")


@dataclass(frozen=True)
class EngineOptions:
    n_ctx: int = field(default=2048, metadata=_help("KV cells per sequence."))
    n_batch: int = field(default=512, metadata=_help("Most tokens one llama_decode takes while reading a prompt."))

    def check(self) -> None:
        for name in ("n_ctx", "n_batch"):
            value = getattr(self, name)
            if not (_integer(value) and 1 <= value <= INT32_MAX):
                raise DriftError(f"{name} must be a positive integer, got {value!r}")
