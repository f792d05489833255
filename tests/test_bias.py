"""The length and lexical families as decoding terms: an end-of-generation bias and per-word token biases."""

import json
from dataclasses import replace

import numpy as np
import pytest

from drift_cpp.steer.binding import word_tokens
from drift_cpp.steer.session import Drift, Sampling
from drift_cpp.errors import DriftError
from drift_cpp.steer.formula import Formula
from drift_cpp.steer.build import drift_formula

PROMPT = "Say hello."
GREEDY = Sampling(temperature=0, max_tokens=48)


def test_eos_bias_moves_the_answer_length_in_its_direction():
    lengths = {}
    for eos in (-4.0, 0.0, 4.0):  # before 1/beta: a negative bias lengthens
        result = Drift(formula=replace(Formula.plain(), eos=eos)).generate(PROMPT, GREEDY)
        lengths[eos] = (len(result.tokens), result.finish_reason)
    assert lengths[-4.0] == (GREEDY.max_tokens, "length")  # it never stops on its own
    assert lengths[-4.0][0] > lengths[0.0][0] > lengths[4.0][0], lengths
    assert lengths[0.0][1] == lengths[4.0][1] == "stop"


def test_word_bias_raises_exactly_its_tokens_fused_logits(smollm):
    beta, weight = 0.5, 1.5
    formula = replace(Formula.plain(beta=beta), words=(("hello", weight),), eos=-0.25)
    session = Drift(formula=formula)
    session.generate(PROMPT, Sampling(temperature=0, max_tokens=1))  # syncs the sequences and sets the bias
    plain = session.engine.logits(0, 0)
    fused = session.engine.fused_logits(0, session.bindings[0].steering())
    bias = np.zeros(plain.size, dtype=np.float32)
    tokens = word_tokens(smollm, "hello")
    assert len(tokens) >= 2 and all(smollm.core.tokenize(t, False, False)[0] in tokens
                                    for t in ("hello", " hello", "Hello", " Hello"))
    bias[tokens] += weight / beta
    bias[[t for t in range(plain.size) if smollm.core.is_eog(t)]] += -0.25 / beta
    # The LLM's row times 1, then the bias: the same float32 sums as numpy's.
    np.testing.assert_array_equal(fused, plain.astype(np.float32) + bias)


def test_word_bias_changes_the_greedy_answer_toward_the_word():
    plain = Drift().generate(PROMPT, GREEDY).text.lower()
    steered = Drift(formula=replace(Formula.plain(), words=(("wonderful", 3.0),))).generate(PROMPT, GREEDY).text
    assert "wonderful" not in plain and "wonderful" in steered.lower()


def test_biases_are_saved_with_the_formula_and_checked(tmp_path, smollm):
    formula = replace(Formula.plain(), eos=-1.5, words=(("please", 0.75), ("dude", -0.5)))
    path = tmp_path / "f.json"
    formula.save(path, {"llm": smollm.identity})
    loaded = Formula.load(path)
    assert (loaded.eos, loaded.words, loaded.terms) == (formula.eos, formula.words, formula.terms)
    obj = json.loads(path.read_text())
    for field, value, message in (("eos", "x", "field 'eos' must be a finite number"),
                                  ("words", [["please", "1"]], "field 'words' must be a list"),
                                  ("words", [["", 1.0]], "field 'words' must be a list"),
                                  ("eos", 5000.0, "biases beyond")):
        path.write_text(json.dumps({**obj, field: value}))
        with pytest.raises(DriftError, match=message):
            Formula.load(path)


def test_a_profile_s_families_become_its_formula_terms_and_negate_with_it():
    from test_choice import synthetic_profile
    length, _ = synthetic_profile("length", family="length")
    f = drift_formula(None, [(length, 1.0)], 0.5)
    assert f.eos == -length.length_weight() and not f.steering  # length alone: no attribute terms
    assert drift_formula(None, [(length, -1.0)], 0.5).eos == length.length_weight()
    lexical, _ = synthetic_profile("lexical")
    words = dict(drift_formula(None, [(lexical, 1.0)], 0.5).words)
    assert words == dict(lexical.word_weights()) and words["kindly"] > 0 > words["dude"]
