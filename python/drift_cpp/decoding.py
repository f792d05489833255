"""Drift Decoding (paper section 3.2): generation steered by a formula, token loop in native code.

A session binds a formula's roles to loaded models and gives each distinct (model, system prompt)
one KV sequence; the native engine sums their logits with the formula's coefficients each step.
For a profile, h = h_LLM + (1/β) Σ_i p_i (h_i − h_base), with h_i the sLM's logits under s_i.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

from .chat import MessageLike, as_messages
from .errors import DriftError
from .fileio import check_utf8
from .formula import LLM, SLM, Formula
from .models import Model, ModelOptions, load_model
from .params import DEFAULT_BETA, EngineOptions, Sampling, check_beta, check_top_attributes
from .profile import Profile
from .runtime import _core

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


class _Slot:
    """One formula bound to models: its distinct (model, system prompt) sequences, LLM first."""

    def __init__(self, formula: Formula, roles: dict[str, Model], models: list[Model]):
        self.formula = formula
        self.sequences: list[_Sequence] = []
        self.terms: list[list] = []  # the formula's terms summed into each sequence
        for term in formula.terms:
            model = roles[term.model]
            found = next((i for i, s in enumerate(self.sequences) if s.model is model and s.system == term.system),
                         None)
            if found is None:
                self.sequences.append(_Sequence(model, term.system))
                self.terms.append([term])
            else:
                self.terms[found].append(term)
        self.layout = [next(i for i, m in enumerate(models) if m is s.model) for s in self.sequences]

    def coefficients(self) -> list[float]:
        beta = self.formula.beta
        return [sum(t.coefficient(beta) for t in terms) for terms in self.terms]

    def bias(self, writer: Model) -> tuple[list[tuple[int, float]], float]:
        """The formula's static biases over 1/beta: (token, bias) of its words, and the end-of-generation bias."""
        beta = self.formula.beta
        tokens = [(t, w / beta) for word, w in self.formula.words for t in word_tokens(writer, word)]
        return tokens, self.formula.eos / beta


def word_tokens(model: Model, word: str) -> list[int]:
    """The tokens a word's bias goes to: the first token of the word and of " word", lower-case and
    capitalized (each once)."""
    out = []
    for form in dict.fromkeys((word, word.capitalize())):
        for text in (form, " " + form):
            tokens = model.core.tokenize(text, False, False)
            if tokens and tokens[0] not in out:
                out.append(tokens[0])
    return out


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
        self.llm = load_model(llm, options)
        self.slm = load_model(slm, options)
        if formula is None:
            formula = Formula.drift(system, _as_blend(profile), beta, top_attributes, exclude)
        roles = {LLM: self.llm, SLM: self.slm}
        check_models(formula, roles)
        formulas = [formula] + ([Formula.plain(formula.system)] if compare else [])
        self.models = [self.llm] + ([self.slm] if self.slm is not self.llm else [])
        self._slots = [_Slot(f, roles, self.models) for f in formulas]
        # The engine checks that the models share a vocabulary.
        self.engine = _core.Engine([m.core for m in self.models], [s.layout for s in self._slots],
                                   n_ctx=engine.n_ctx, n_batch=engine.n_batch, n_threads=options.n_threads)
        self.history: list[dict] = []
        # One caller at a time: the engine's KV caches belong to one conversation.
        self._lock = threading.RLock()

    @property
    def formula(self) -> Formula:
        return self._slots[0].formula

    @property
    def beta(self) -> float:
        return self.formula.beta

    @beta.setter
    def beta(self, value: float) -> None:
        value = check_beta(value)
        with self._lock:
            self._slots[0].formula = self.formula.with_beta(value)

    @property
    def active_weights(self) -> list[tuple[str, float]]:
        """The attribute weights p that steer (before 1/β); empty for plain decoding."""
        return list(self.formula.steering)

    @property
    def identities(self) -> dict[str, dict]:
        return {LLM: self.llm.identity, SLM: self.slm.identity}

    def _sync(self, slot: int, history: list[dict]) -> None:
        self.engine.sync(slot, [s.prompt(history) for s in self._slots[slot].sequences])

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
                self.engine.set_bias(slot, *self._slots[slot].bias(self.llm))
            results = self.engine.generate(list(slots), [self._slots[s].coefficients() for s in slots],
                                           [native] * len(slots), piece)
            out = []
            for slot, r in zip(slots, results):
                exact = r["finish_reason"] in ("stop", "interrupted") and self.llm.detokenize(r["tokens"]) == r["text"]
                for s in self._slots[slot].sequences:
                    s.generated(r["text"], r["tokens"], exact)
                out.append(Generation(r["text"], r["finish_reason"], r["tokens"], r["seconds"],
                                      r["entropy_plain_bits"], r["entropy_fused_bits"],
                                      list(self._slots[slot].formula.steering)))
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
        return self._generate(_history(messages), sampling, None, stats, slots=range(len(self._slots)))

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

    def compare_last(self, sampling: Sampling = Sampling()) -> Generation:
        """The plain answer to the chat's last user turn (needs compare=True)."""
        if len(self._slots) < 2:
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


def check_models(formula: Formula, roles: dict[str, Model]) -> None:
    """A profile's rewards, so a formula's weights, hold only for the models it was made for."""
    for role, identity in formula.models:
        if not roles[role].same_as(identity):
            raise DriftError(f"the profile or formula was made for {role} {identity.get('name')} and cannot be "
                             f"used with {roles[role].identity['name']}: its weights hold only for that model")


def check_history(history: list[dict]) -> None:
    for i, m in enumerate(history):
        if not isinstance(m["content"], str):
            raise DriftError(f"message {i + 1}: content must be a string, got {type(m['content']).__name__}")
        check_utf8(m["content"], f"message {i + 1}")


def native_sampling(sampling: Sampling, stats: bool = False):
    """The engine's sampling struct: the same fields as Sampling (checked here), plus entropy_stats."""
    sampling.check()
    native = _core.SamplingParams()
    for f in dataclasses.fields(sampling):
        setattr(native, f.name, list(sampling.stop) if f.name == "stop" else getattr(sampling, f.name))
    native.entropy_stats = stats
    return native


def _history(messages: Union[str, Sequence[MessageLike]]) -> list[dict]:
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else as_messages(messages)


def _as_blend(profile) -> list[tuple[Profile, float]]:
    """None, a profile (or its path), or a list of (profile or path, weight)."""
    if profile is None:
        return []
    if isinstance(profile, (Profile, str)):
        profile = [(profile, 1.0)]
    return [(Profile.load(p) if isinstance(p, str) else p, float(w)) for p, w in profile]
