"""Drift Decoding (paper section 3.2): generation steered by a profile, token loop in native code.

h = h_LLM + (1/β) Σ_i p_i (h_i − h_base), with h_i the sLM's logits under attribute prompt s_i.
"""

from __future__ import annotations

import math
import numbers
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

from .chat import MessageLike, as_messages
from .errors import DriftError
from .fileio import check_utf8
from .models import Model, ModelOptions, load_model
from .profile import Profile
from .runtime import _core

BASE_PROMPT = "You are an AI assistant."

# The valid beta, for the CLI, chat's /beta and Drift alike. The engine adds (p_i / beta) * h to the
# logits in float32: with |p_i| <= 1, at most 41 attributes and logits far below 1e4 in size, 1/beta
# <= 1e6 keeps every term below 1e12, far from float32's 3.4e38; the top is the largest float32 power of ten.
BETA_RANGE = (1e-6, 1e38)
FLOAT32_MAX = 3.4028234663852886e38
INT32_MAX = 2**31 - 1  # the engine's ints (max_tokens, top_k, n_ctx)


def check_beta(beta: float) -> float:
    """The one check of beta; returns it as a float."""
    low, high = BETA_RANGE
    if not (_real(beta) and low <= beta <= high):
        raise DriftError(f"beta must be positive and within [{low:g}, {high:g}], got {beta!r}")
    return float(beta)


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _finite(x) -> bool:
    """A number the engine can hold in a float32."""
    return _real(x) and math.isfinite(x) and abs(x) <= FLOAT32_MAX


@dataclass
class Sampling:
    temperature: float = 0.8  # 0: greedy
    top_p: float = 0.9        # the paper's
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    max_tokens: int = 500     # the paper's text_length
    stop: Sequence[str] = ()

    def check(self) -> None:
        """The one place sampling settings are validated; the CLI calls it before loading any model."""
        for name in ("temperature", "top_p", "min_p"):
            if not _finite(getattr(self, name)):
                raise DriftError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("top_k", "seed", "max_tokens"):
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
        if isinstance(self.stop, str):
            raise DriftError("stop must be a list of strings, not one string")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise DriftError(f"stop strings must be non-empty strings, got {s!r}")
            check_utf8(s, f"stop string {s!r}")


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop", "length" or "interrupted"
    tokens: list[int]
    seconds: float
    entropy_plain_bits: float = 0.0
    entropy_fused_bits: float = 0.0
    weights: list[tuple[str, float]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


class _Sequence:
    """What one KV sequence holds, as text and as tokens, so a new turn tokenizes only its own text."""

    def __init__(self, model: Model, system: str):
        self.model, self.system = model, system
        self.text, self.tokens = "", []

    def prompt(self, history: list[dict]) -> list[int]:
        text = self.model.render([{"role": "system", "content": self.system}] + history)
        if self.text and text.startswith(self.text):
            tokens = self.tokens + self.model.core.tokenize(text[len(self.text):], False, True)
        else:
            tokens = self.model.tokenize_prompt(text)
        self.text, self.tokens = text, tokens
        return tokens

    def generated(self, text: str, tokens: list[int], exact: bool) -> None:
        if exact:  # the KV cache holds exactly these tokens after the prompt
            self.text, self.tokens = self.text + text, self.tokens + tokens


class Drift:
    """Models are loaded once; one Drift holds the KV caches of one conversation."""

    def __init__(self, llm: Optional[str] = None, slm: Optional[str] = None, profile: Union[Profile, str, None] = None,
                 beta: float = 0.5, system: Optional[str] = None, top_attributes: Optional[int] = None,
                 exclude: Sequence[str] = (), n_ctx: int = 2048, options: ModelOptions = ModelOptions()):
        self.check_options(beta, top_attributes, n_ctx)
        self.beta = beta
        self.llm = load_model(llm, options)
        self.slm = load_model(slm, options)
        self.profile = Profile.load(profile) if isinstance(profile, str) else profile
        self.weights = []
        base = BASE_PROMPT
        if self.profile is not None:
            self.profile.check_model(self.slm)
            self.weights = self.profile.decoding_weights(top_attributes, exclude)
            base = self.profile.attributes.base.prompt
        self.system = system or base
        share_base = self.llm is self.slm and self.system == base
        try:  # the engine checks that the two models share a vocabulary
            self.engine = _core.Engine(self.llm.core, self.slm.core, len(self.weights), share_base, n_ctx=n_ctx,
                                       n_threads=options.n_threads)
        except RuntimeError as e:
            raise DriftError(str(e)) from None
        self._llm_seq = _Sequence(self.llm, self.system)
        slm_systems = [base] + [a.prompt for a, _ in self.weights] if (self.weights or share_base) else []
        self._slm_seqs = [_Sequence(self.slm, s) for s in slm_systems]
        self.history: list[dict] = []

    @staticmethod
    def check_options(beta: float, top_attributes: Optional[int], n_ctx: int) -> None:
        """What can be checked before any model is loaded."""
        check_beta(beta)
        if top_attributes is not None and not (_integer(top_attributes) and top_attributes >= 1):
            raise DriftError(f"top_attributes must be at least 1, got {top_attributes!r}")
        if not (_integer(n_ctx) and 1 <= n_ctx <= INT32_MAX):
            raise DriftError(f"n_ctx must be a positive integer, got {n_ctx!r}")

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = check_beta(value)

    @property
    def active_weights(self) -> list[tuple[str, float]]:
        return [(a.id, w) for a, w in self.weights]

    def _sync(self, history: list[dict]) -> None:
        llm_prompt = self._llm_seq.prompt(history) if not self.engine.share_base else []
        try:
            self.engine.sync(llm_prompt, [s.prompt(history) for s in self._slm_seqs])
        except ValueError as e:
            raise DriftError(str(e)) from None

    def _generate(self, history: list[dict], sampling: Sampling, on_piece, stats: bool) -> Generation:
        sampling.check()
        for i, m in enumerate(history):
            if not isinstance(m["content"], str):
                raise DriftError(f"message {i + 1}: content must be a string, got {type(m['content']).__name__}")
            check_utf8(m["content"], f"message {i + 1}")
        self._sync(history)
        r = self.engine.generate([w for _, w in self.weights], self.beta, sampling.temperature, sampling.top_k,
                                 sampling.top_p, sampling.min_p, sampling.seed, sampling.max_tokens,
                                 list(sampling.stop), stats, on_piece)
        exact = r["finish_reason"] in ("stop", "interrupted") and self.llm.detokenize(r["tokens"]) == r["text"]
        for s in ([self._llm_seq] if not self.engine.share_base else []) + self._slm_seqs:
            s.generated(r["text"], r["tokens"], exact)
        return Generation(r["text"], r["finish_reason"], r["tokens"], r["seconds"], r["entropy_plain_bits"],
                          r["entropy_fused_bits"], self.active_weights)

    def generate(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling(),
                 on_piece: Optional[Callable[[str], None]] = None, stats: bool = False) -> Generation:
        """One answer to a prompt or a conversation (its KV caches are reused when it extends the last one)."""
        history = [{"role": "user", "content": messages}] if isinstance(messages, str) else as_messages(messages)
        return self._generate(history, sampling, on_piece, stats)

    def stream(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling()) -> Iterator[str]:
        """Yields complete UTF-8 pieces as they are generated."""
        pieces: queue.Queue = queue.Queue()
        done = object()
        failure = []

        def run():
            try:
                self.generate(messages, sampling, on_piece=pieces.put)
            except BaseException as e:  # handed to the consumer
                failure.append(e)
            pieces.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while (piece := pieces.get()) is not done:
            yield piece
        worker.join()
        if failure:
            raise failure[0]

    def chat(self, user: str, sampling: Sampling = Sampling(), on_piece=None, stats: bool = False) -> Generation:
        """One turn of a multi-turn chat: only the new turn's tokens are evaluated."""
        history = self.history + [{"role": "user", "content": user}]
        result = self._generate(history, sampling, on_piece, stats)
        self.history = history + [{"role": "assistant", "content": result.text}]
        return result

    def reset(self) -> None:
        self.history = []
