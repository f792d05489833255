"""Drift Decoding (paper section 3.2): generation steered by a formula, token loop in native code.

A session binds a formula's roles to loaded models and gives each distinct (model, system prompt)
one KV sequence; the native engine sums their logits with the formula's coefficients each step.
For a profile, h = h_LLM + (1/β) Σ_i p_i (h_i − h_base), with h_i the sLM's logits under s_i.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

from .binding import Binding, check_history, native_sampling
from ..chat import MessageLike, as_messages
from ..errors import DriftError
from .formula import LLM, SLM, Formula
from .build import drift_formula
from ..models import ModelOptions, load_model, partner_slm
from ..params import DEFAULT_BETA, EngineOptions, Sampling, check_beta, check_top_attributes
from ..fit.profile import Profile
from ..runtime import _core

__all__ = ["Drift", "Generation", "Sampling", "EngineOptions"]


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


class Drift:
    """A conversation steered by a formula. Models are loaded once; the session holds the KV caches.

    The formula comes from `formula`, or from `profile` (one, or a list of (profile, weight) to
    blend) with `beta`, or is plain decoding. `compare=True` adds plain decoding as a second slot
    that `generate_all` runs in the same steps. One caller at a time: calls from several threads
    take turns.
    """

    def __init__(self, llm: Optional[str] = None, slm: Optional[str] = None,
                 profile: Union[Profile, str, Sequence[tuple[Union[Profile, str], float]], None] = None,
                 beta: float = DEFAULT_BETA, system: Optional[str] = None, top_attributes: Optional[int] = None,
                 exclude: Sequence[str] = (), engine: EngineOptions = EngineOptions(),
                 options: ModelOptions = ModelOptions(), formula: Optional[Formula] = None, compare: bool = False):
        check_beta(beta)
        check_top_attributes(top_attributes)
        engine.check()
        if formula is None:
            formula = drift_formula(system, _as_blend(profile), beta, top_attributes, exclude)
        self.llm = load_model(llm, options)
        # Plain decoding (and CFG) needs no sLM: none is loaded, and a preset LLM's vocabulary decides.
        needs_slm = any(t.model == SLM for t in formula.terms)
        self.slm = load_model(partner_slm(llm, slm), options) if needs_slm else self.llm
        roles = {LLM: self.llm, SLM: self.slm}
        formulas = [formula] + ([Formula.plain(formula.system)] if compare else [])
        self.models = [self.llm] + ([self.slm] if self.slm is not self.llm else [])
        self.bindings = [Binding(f, roles, self.models) for f in formulas]
        # The engine checks that the models share a vocabulary.
        self.engine = _core.Engine([m.core for m in self.models], [b.layout for b in self.bindings],
                                   n_ctx=engine.n_ctx, n_batch=engine.n_batch, n_threads=options.n_threads)
        self.history: list[dict] = []
        # One caller at a time: the engine's KV caches belong to one conversation.
        self._lock = threading.RLock()

    @property
    def formula(self) -> Formula:
        return self.bindings[0].formula

    @property
    def beta(self) -> float:
        return self.formula.beta

    @beta.setter
    def beta(self, value: float) -> None:
        value = check_beta(value)
        with self._lock:
            self.bindings[0].formula = self.formula.with_beta(value)

    @property
    def active_weights(self) -> list[tuple[str, float]]:
        """The attribute weights p that steer (before 1/β); empty for plain decoding."""
        return list(self.formula.steering)

    @property
    def identities(self) -> dict[str, dict]:
        """The models the formula runs on, by role (the sLM only where a term uses it)."""
        uses_slm = any(t.model == SLM for t in self.formula.terms)
        return {LLM: self.llm.identity, **({SLM: self.slm.identity} if uses_slm else {})}

    def _sync(self, slot: int, history: list[dict]) -> None:
        self.engine.sync(slot, self.bindings[slot].prompts(history))

    def _generate(self, history: list[dict], sampling: Sampling, on_piece, stats: bool,
                  cancel: Optional[threading.Event] = None, slots: Sequence[int] = (0,)) -> list[Generation]:
        native = native_sampling(sampling, stats)
        check_history(history)

        def piece(slot: int, text: str) -> bool:  # called by the engine after every token: False stops it
            if text and on_piece is not None and on_piece(slot, text) is False:
                return False
            return cancel is None or not cancel.is_set()

        with self._lock:
            for slot in slots:
                self._sync(slot, history)
            results = self.engine.generate(list(slots), [self.bindings[s].steering() for s in slots],
                                           [native] * len(slots), piece)
            out = []
            for slot, r in zip(slots, results):
                self.bindings[slot].generated(r)
                out.append(Generation(r["text"], r["finish_reason"], r["tokens"], r["seconds"],
                                      r["entropy_plain_bits"], r["entropy_fused_bits"],
                                      list(self.bindings[slot].formula.steering)))
            return out

    def generate(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling(),
                 on_piece: Optional[Callable[[str], object]] = None, stats: bool = False) -> Generation:
        """One answer to a prompt or a conversation (its KV caches are reused when it extends the last one).

        on_piece receives the text as it is generated; returning False from it stops generation
        at once, with finish_reason "interrupted".
        """
        forward = None if on_piece is None else (lambda _slot, text: on_piece(text))
        return self._generate(_history(messages), sampling, forward, stats)[0]

    def generate_all(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling(),
                     stats: bool = False) -> list[Generation]:
        """One answer per formula (the session's, then plain with compare=True), generated side by side."""
        return self._generate(_history(messages), sampling, None, stats, slots=range(len(self.bindings)))

    def stream(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling()) -> Iterator[str]:
        """Yields complete UTF-8 pieces as they are generated.

        Closing the iterator early (a `break`, or `close()`) cancels the generation within one
        token, and the session is free again when close() returns.
        """
        history = _history(messages)
        pieces: queue.Queue = queue.Queue()
        cancel = threading.Event()
        done = object()
        failure = []

        def run():
            try:
                self._generate(history, sampling, lambda _slot, text: pieces.put(text), False, cancel)
            except BaseException as e:  # handed to the consumer
                failure.append(e)
            pieces.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            cancel.set()
            worker.join()
        if failure:
            raise failure[0]

    def chat(self, user: str, sampling: Sampling = Sampling(), on_piece=None, stats: bool = False) -> Generation:
        """One turn of a multi-turn chat: only the new turn's tokens are evaluated."""
        with self._lock:
            history = self.history + [{"role": "user", "content": user}]
            result = self.generate(history, sampling, on_piece, stats)
            self.history = history + [{"role": "assistant", "content": result.text}]
            return result

    def generate_plain(self, messages: Union[str, Sequence[MessageLike]], sampling: Sampling = Sampling()) -> Generation:
        """Plain decoding's answer, beside the session's formula (needs compare=True)."""
        if len(self.bindings) < 2:
            raise DriftError("this session was made without compare=True")
        return self._generate(_history(messages), sampling, None, False, slots=(1,))[0]

    def compare_last(self, sampling: Sampling = Sampling()) -> Generation:
        """The plain answer to the chat's last user turn (needs compare=True)."""
        if len(self.bindings) < 2:
            raise DriftError("this session was made without compare=True")
        with self._lock:
            last = max((i for i, m in enumerate(self.history) if m["role"] == "user"), default=None)
            if last is None:
                raise DriftError("nothing to compare yet")
            return self._generate(self.history[: last + 1], sampling, None, False, slots=(1,))[0]

    def reset(self) -> None:
        with self._lock:
            self.history = []

    def save_formula(self, path) -> None:
        self.formula.save(path, self.identities)


def _history(messages: Union[str, Sequence[MessageLike]]) -> list[dict]:
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else as_messages(messages)


def _as_blend(profile) -> list[tuple[Profile, float]]:
    """None, a profile (or its path), or a list of (profile or path, weight)."""
    if profile is None:
        return []
    if isinstance(profile, (Profile, str)):
        profile = [(profile, 1.0)]
    return [(Profile.load(p) if isinstance(p, str) else p, float(w)) for p, w in profile]
