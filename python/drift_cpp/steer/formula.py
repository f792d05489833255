"""Steering as data: a formula is a weighted sum of the next-token logits of prompted models.

    h = sum_k c_k h_k,   h_k = the logits of model_k on the conversation under system prompt s_k

Drift (paper eq. 9) is one formula: the LLM under its system prompt with weight 1, the sLM under
each attribute prompt with p_i / beta and under the base prompt with -sum_i p_i / beta. So are
plain decoding (the LLM alone), classifier-free guidance (h_neg + G (h_pos - h_neg)), blends of
profiles (their steering terms, scaled and summed) and negated profiles (weight -1).

A term's model is a role, "llm" or "slm"; the session binds roles to loaded models. Terms on the
same model and prompt share one KV cache (see session.Drift), so equal terms are summed there.
A formula is saved as JSON with the identities of the models it was made for.

Two static biases act on the fused logits, both divided by beta like the steering terms: `eos` on
the LLM's end-of-generation tokens (a profile's length preference: a negative bias lengthens) and
`words`, per word, on the first token of the word with and without a leading space and capital
(a profile's lexical preference). A word's bias approximates its share of a response's reward
one occurrence at a time; the length bias is the weight per e-fold of length applied per step.

With a `length_target` (words: the median length of the answers the person chose), `eos` is no
constant bias but a hazard around the target in the same units (csrc/length.h): a taste for shorter
answers (eos > 0) ends the answer at a sentence end past the target with probability
1 - ((1 + T) / (1 + n))^(eos / beta) after n words, i.e. it outlives each e-fold past T with
probability e^(-eos / beta); a taste for longer ones (eos < 0) lowers end of generation by eos / beta
per e-fold still to go before T. Formulas saved before it have none and decode as they did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from ..score.attributes import builtin_attributes
from ..errors import DriftError
from ..fileio import atomic_write_text, check_utf8, parse_json, read_text
from ..params import DEFAULT_BETA, check_beta, check_finite, check_guard, check_length_target, is_number

LLM, SLM = "llm", "slm"
FORMAT = "drift-cpp formula"
VERSION = 1
# A weight this large drowns the LLM's own logits: what is sampled is no longer language.
MAX_WEIGHT = 1000.0


def default_system() -> str:
    """s_0, the paper's base prompt: the LLM's system prompt unless one is given."""
    return builtin_attributes().base.prompt


@dataclass(frozen=True)
class Term:
    model: str            # "llm" or "slm"
    system: str           # the system prompt of this term's sequence
    weight: float
    per_beta: bool = False  # steering terms: the coefficient is weight / beta
    label: str = ""       # what the term is, for people: "llm", "base", an attribute id, "negative"

    def coefficient(self, beta: float) -> float:
        return self.weight / beta if self.per_beta else self.weight


@dataclass(frozen=True)
class Formula:
    terms: tuple[Term, ...]
    beta: float = DEFAULT_BETA
    # Attribute weights of the steering (before 1/beta), for people and Generation.weights.
    steering: tuple[tuple[str, float], ...] = ()
    # The identities of the models the terms were made for, by role: a profile's rewards hold
    # only for its sLM. A session refuses other models.
    models: tuple[tuple[str, dict], ...] = ()
    eos: float = 0.0                               # bias (before 1/beta) on end-of-generation tokens
    words: tuple[tuple[str, float], ...] = ()      # per-word biases (before 1/beta) on their tokens
    # The guard: only tokens with p_LLM >= plausibility * max p_LLM (the LLM term's own distribution)
    # are sampled, and the steering is scaled so that KL(fused || LLM) <= max_kl nats; 0: off.
    plausibility: float = 0.0
    max_kl: float = 0.0
    length_target: float = 0.0                     # words; 0: eos is a constant bias

    # -- building ---------------------------------------------------------
    @classmethod
    def plain(cls, system: Optional[str] = None, beta: float = DEFAULT_BETA) -> "Formula":
        """The LLM alone, under `system` (default: the base prompt s_0)."""
        return cls((Term(LLM, system or default_system(), 1.0, label=LLM),), beta)

    def with_cfg(self, negative_system: str, scale: float) -> "Formula":
        """Classifier-free guidance on the LLM: its term h_pos becomes h_neg + G (h_pos - h_neg)."""
        check_finite(scale, "cfg scale")
        terms = []
        for t in self.terms:
            if t.model == LLM and not t.per_beta:
                terms += [replace(t, weight=t.weight * scale),
                          Term(LLM, negative_system, t.weight * (1.0 - scale), label="negative")]
            else:
                terms.append(t)
        return replace(self, terms=tuple(terms)).merged()

    def with_beta(self, beta: float) -> "Formula":
        return replace(self, beta=beta)

    def with_guard(self, plausibility: float, max_kl: float = 0.0) -> "Formula":
        check_guard(plausibility, max_kl)
        return replace(self, plausibility=float(plausibility), max_kl=float(max_kl))

    def terms_llm_first(self) -> tuple[Term, ...]:
        """The terms with the LLM's own (its first weight-only term) first: the guard's reference."""
        first = next((t for t in self.terms if t.model == LLM and not t.per_beta), None)
        return self.terms if first is None else (first,) + tuple(t for t in self.terms if t is not first)

    def merged(self) -> "Formula":
        """Equal (model, prompt) terms summed into one, in first-seen order; zero weights dropped."""
        out: dict[tuple, Term] = {}
        for t in self.terms:
            key = (t.model, t.system, t.per_beta)
            if key in out:
                kept = out[key]
                labels = kept.label if t.label in kept.label.split("+") else f"{kept.label}+{t.label}"
                out[key] = replace(kept, weight=kept.weight + t.weight, label=labels)
            else:
                out[key] = t
        terms = tuple(t for t in out.values() if t.weight != 0.0)
        if not terms:
            raise DriftError("the formula has no term with a non-zero weight")
        return replace(self, terms=terms)

    def check(self) -> "Formula":
        """The one check of a formula's numbers, wherever it comes from; errors name its fields as saved."""
        for i, t in enumerate(self.terms):
            if abs(t.weight) > MAX_WEIGHT:
                raise DriftError(f"field 'terms[{i}].weight' is {t.weight:g}; weights beyond {MAX_WEIGHT:g} drown "
                                 "the LLM's own logits")
        for name, value in [("eos", self.eos)] + [(f"words[{i}]", w) for i, (_, w) in enumerate(self.words)]:
            if abs(value) > MAX_WEIGHT:
                raise DriftError(f"field '{name}' is {value:g}; biases beyond {MAX_WEIGHT:g} drown the LLM's own logits")
        if sum(t.weight for t in self.terms if t.model == LLM and not t.per_beta) <= 0:
            raise DriftError("field 'terms': the LLM's own weights sum to zero or less: what is sampled would "
                             "not be its language")
        check_beta(self.beta, "field 'beta'")
        check_guard(self.plausibility, self.max_kl, ("field 'plausibility'", "field 'max_kl'"))
        check_length_target(self.length_target, "field 'length_target'")
        return self

    @property
    def system(self) -> str:
        """The LLM's own system prompt: that of its first term."""
        return next(t.system for t in self.terms if t.model == LLM)

    # -- reading and writing ----------------------------------------------
    def to_dict(self, models: Mapping[str, dict]) -> dict:
        """As JSON, naming the models (by role) it runs on, so that loading refuses others."""
        return {"format": FORMAT, "version": VERSION, "beta": self.beta,
                "models": {role: {k: identity[k] for k in ("name", "sha256")} for role, identity in models.items()},
                "terms": [{"model": t.model, "system": t.system, "weight": t.weight, "per_beta": t.per_beta,
                           "label": t.label} for t in self.terms],
                "steering": [[a, w] for a, w in self.steering],
                "plausibility": self.plausibility, "max_kl": self.max_kl,
                **({"eos": self.eos} if self.eos else {}), **({"words": [list(w) for w in self.words]} if self.words else {}),
                **({"length_target": self.length_target} if self.length_target else {})}

    def save(self, path, models: Mapping[str, dict]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(models), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path) -> "Formula":
        """The formula in a JSON file, with the identities of the models it was saved for."""
        where = os.fspath(path)
        obj = parse_json(read_text(path, where), where)
        try:
            return _parse(obj)
        except _Invalid as e:
            raise DriftError(f"{where}: {e}") from None


class _Invalid(Exception):
    pass


def _utf8(text: str, field: str) -> None:
    """A JSON \\ud800 escape loads as a lone surrogate, which no file can hold again."""
    try:
        check_utf8(text, f"field '{field}'")
    except DriftError as e:
        raise _Invalid(str(e)) from None


def _field(obj: dict, name: str, kind, what: str):
    if name not in obj:
        raise _Invalid(f"missing field '{name}'")
    value = obj[name]
    if kind is float:
        if not is_number(value):
            raise _Invalid(f"field '{name}' must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise _Invalid(f"field '{name}' must be {what}, got {type(value).__name__}")
    return value


def _parse(obj) -> Formula:
    if not isinstance(obj, dict):
        raise _Invalid("top level must be a JSON object")
    if obj.get("format") != FORMAT:
        raise _Invalid(f"field 'format' must be {FORMAT!r}: this is not a drift-cpp formula")
    if obj.get("version") != VERSION:
        raise _Invalid(f"field 'version' is {obj.get('version')!r}, this version of drift-cpp reads {VERSION}")
    unknown = set(obj) - {"format", "version", "beta", "models", "terms", "steering", "eos", "words", "plausibility",
                          "max_kl", "length_target"}
    if unknown:
        raise _Invalid(f"unknown field '{sorted(unknown)[0]}'")
    beta = _field(obj, "beta", float, "a number")
    try:
        check_beta(beta, "field 'beta'")
    except DriftError as e:
        raise _Invalid(str(e)) from None
    models = _field(obj, "models", dict, "an object")
    for role, identity in models.items():
        if role not in (LLM, SLM):
            raise _Invalid(f"field 'models' has unknown role '{role}' (llm or slm)")
        if not isinstance(identity, dict) or not all(isinstance(identity.get(k), str) for k in ("name", "sha256")):
            raise _Invalid(f"field 'models.{role}' must be an object with strings 'name' and 'sha256'")
    items = _field(obj, "terms", list, "a list")
    if not items:
        raise _Invalid("field 'terms' must not be empty")
    terms = []
    for i, item in enumerate(items):
        at = f"terms[{i}]"
        if not isinstance(item, dict):
            raise _Invalid(f"field '{at}' must be an object")
        unknown = set(item) - {"model", "system", "weight", "per_beta", "label"}
        if unknown:
            raise _Invalid(f"field '{at}' has unknown key '{sorted(unknown)[0]}'")
        model = item.get("model")
        if model not in (LLM, SLM):
            raise _Invalid(f"field '{at}.model' must be 'llm' or 'slm', got {model!r}")
        if model not in models:
            raise _Invalid(f"field '{at}.model' is '{model}' but 'models' does not identify it")
        system = item.get("system")
        if not isinstance(system, str) or not system.strip():
            raise _Invalid(f"field '{at}.system' must be a non-empty string")
        _utf8(system, f"{at}.system")
        weight = item.get("weight")
        if not is_number(weight):
            raise _Invalid(f"field '{at}.weight' must be a finite number, got {weight!r}")
        per_beta = item.get("per_beta", False)
        if not isinstance(per_beta, bool):
            raise _Invalid(f"field '{at}.per_beta' must be true or false")
        label = item.get("label", "")
        if not isinstance(label, str):
            raise _Invalid(f"field '{at}.label' must be a string")
        _utf8(label, f"{at}.label")
        terms.append(Term(model, system, float(weight), per_beta, label))
    if not any(t.model == LLM for t in terms):
        raise _Invalid("field 'terms' has no 'llm' term: nothing writes the answer")
    steering = obj.get("steering", [])
    if not isinstance(steering, list) or not all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and is_number(s[1]) for s in steering):
        raise _Invalid("field 'steering' must be a list of [attribute id, finite weight] pairs")
    for i, (attribute, _) in enumerate(steering):
        _utf8(attribute, f"steering[{i}]")
    eos = _field({"eos": 0.0, **obj}, "eos", float, "a number")
    words = obj.get("words", [])
    if not isinstance(words, list) or not all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and s[0].strip() and is_number(s[1])
            for s in words):
        raise _Invalid("field 'words' must be a list of [word, finite weight] pairs")
    for i, (word, _) in enumerate(words):
        _utf8(word, f"words[{i}]")
    # Absent in formulas saved before the guard: they decode as they were saved, unguarded.
    plausibility = _field({"plausibility": 0.0, **obj}, "plausibility", float, "a number")
    max_kl = _field({"max_kl": 0.0, **obj}, "max_kl", float, "a number")
    try:
        check_guard(plausibility, max_kl, ("field 'plausibility'", "field 'max_kl'"))
    except DriftError as e:
        raise _Invalid(str(e)) from None
    # Absent in formulas saved before the length target: their eos stays a constant bias.
    length_target = _field({"length_target": 0.0, **obj}, "length_target", float, "a number")
    formula = Formula(tuple(terms), beta, tuple((a, float(w)) for a, w in steering), tuple(models.items()), eos,
                      tuple((w, float(v)) for w, v in words), plausibility, max_kl, length_target)
    try:
        formula.check()  # before merging: the error names the field as it is in the file
        return formula.merged()
    except DriftError as e:
        raise _Invalid(str(e)) from None
