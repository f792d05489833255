"""A formula bound to an engine slot: the one way any caller decodes a formula.

The single-user session (decoding.Drift) and the server's batcher (batching) both bind through
here, so a formula decodes the same way whoever calls it. A binding gives the slot one KV sequence
per distinct (model, system prompt) of the formula, the LLM's own first (its logits are the
plausibility guard's reference), and builds the slot's native Steering: the coefficients, the word
and length biases over beta (with a length target, the length hazard), and the guard. The engine takes the steering with every generate
call, so a slot cannot run without its biases.
"""

from __future__ import annotations

import dataclasses

from ..errors import DriftError
from ..fileio import check_utf8
from .formula import LLM, Formula
from ..models import Model
from ..params import Sampling
from ..runtime import _core


class Sequence:
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


class Binding:
    """One formula over loaded models: its sequences (the LLM's own first) and its steering."""

    def __init__(self, formula: Formula, roles: dict[str, Model], models: list[Model]):
        check_models(formula, roles)
        self.formula, self.writer = formula.check(), roles[LLM]
        self.sequences: list[Sequence] = []
        self.terms: list[list] = []  # the formula's terms summed into each sequence
        for term in formula.terms_llm_first():
            model = roles[term.model]
            found = next((i for i, s in enumerate(self.sequences) if s.model is model and s.system == term.system),
                         None)
            if found is None:
                self.sequences.append(Sequence(model, term.system))
                self.terms.append([term])
            else:
                self.terms[found].append(term)
        self.layout = [next(i for i, m in enumerate(models) if m is s.model) for s in self.sequences]

    def prompts(self, history: list[dict]) -> list[list[int]]:
        return [s.prompt(history) for s in self.sequences]

    def steering(self) -> "_core.Steering":
        """What the engine applies at every step of this slot."""
        f, beta = self.formula, self.formula.beta
        native = _core.Steering()
        native.coefficients = [sum(t.coefficient(beta) for t in terms) for terms in self.terms]
        native.token_bias = [(t, w / beta) for word, w in f.words for t in word_tokens(self.writer, word)]
        if f.length_target:  # a hazard around the target in place of the constant bias (formula.py)
            native.length_target, native.length_rate = f.length_target, f.eos / beta
        else:
            native.eog_bias = f.eos / beta
        native.plausibility, native.max_kl = f.plausibility, f.max_kl
        return native

    def generated(self, result: dict) -> None:
        """Records an answer in the sequences' text, when the KV caches hold exactly its tokens."""
        exact = (result["finish_reason"] in ("stop", "interrupted")
                 and self.writer.detokenize(result["tokens"]) == result["text"])
        for s in self.sequences:
            s.generated(result["text"], result["tokens"], exact)


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


def check_models(formula: Formula, roles: dict[str, Model]) -> None:
    """A profile's rewards, so a formula's weights, hold only for the models it was made for."""
    for role, identity in formula.models:
        if not roles[role].same_as(identity):
            was, now = roles[role].names(identity)  # same-named files are told apart
            raise DriftError(f"the profile or formula was made for {role} {was} and cannot be used with {now}: "
                             "its weights hold only for that model")


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
        value = getattr(sampling, f.name)
        setattr(native, f.name, list(value) if f.name in ("stop", "logit_bias") else value)
    native.entropy_stats = stats
    return native


def check_sampling_for(model: Model, sampling: Sampling) -> None:
    """The sampling checked, with what only the writing model can judge: the logit_bias's token ids and
    the grammar."""
    sampling.check()
    for token, _ in sampling.logit_bias:
        if token >= model.n_vocab:
            raise DriftError(f"logit_bias: no token {token} in the vocabulary of {model.n_vocab} tokens")
    if sampling.grammar:
        _core.check_grammar(model.core, sampling.grammar)
