"""Decoding toward the lengths a person chose (issue 25): the native length hazard against a numpy
reference on real logits, the words it counts against the fit's own, and old files that load without it."""

import dataclasses
import json
import re

import numpy as np
import pytest

from drift_cpp.fit.features import term_counts
from drift_cpp.fit.profile import Profile
from drift_cpp.runtime import _core
from drift_cpp.steer.build import drift_formula
from drift_cpp.steer.formula import Formula
from drift_cpp.steer.session import Drift, EngineOptions, Sampling

PROMPT = "How do I boil an egg?"
HISTORY = [{"role": "user", "content": PROMPT}]
WEIGHTS = {"concise": 0.5, "formal": -0.3}


def _session(smollm, eos: float, target: float, plausibility: float = 0.0) -> Drift:
    formula = drift_formula(None, [(Profile.with_weights(smollm, WEIGHTS), 1.0)], 0.5).with_guard(plausibility)
    drift = Drift(formula=dataclasses.replace(formula, eos=eos, length_target=target), engine=EngineOptions(n_ctx=256))
    drift._sync(0, HISTORY)
    return drift


def _sentence_end(text: str) -> bool:
    """numpy's side of csrc/length.cpp's rule, written apart from it."""
    if re.search(r"[\r\n][ \t]*$", text):
        return re.search(r"[^:,\s]\s*$", text) is not None
    return re.search(r"(?:[!?]|(?<![0-9])\.)[\"')\]*\u2019\u201d]*[ \t]*$", text) is not None


def _hazard(rows: np.ndarray, eog: list, target: float, rate: float, answer: str) -> np.ndarray:
    out = rows.astype(np.float64).copy()
    n = sum(term_counts(answer).values())
    ahead = np.log((1 + target) / (1 + n))  # e-folds still to go
    if rate < 0 and ahead > 0:
        out[eog] += rate * ahead
    elif rate > 0 and ahead < 0 and _sentence_end(answer):
        best = eog[int(np.argmax(out[eog]))]
        q = 1 - np.exp(rate * ahead)
        others = np.logaddexp.reduce(np.delete(out, best))
        out[best] = max(out[best], others + np.log(q / (1 - q)))
    return out


TEXTS = ["", "Boil it.", "Don't stop: it's 3.5 minutes", "1. Boil the egg\n2. Cool it", "naïve café — über 42x",
         "rock'n'roll isn't ''quoted'' o'", "A-B_C d/e"]


@pytest.mark.parametrize("text", TEXTS)
def test_the_engine_counts_words_as_the_fit_does(text):
    assert _core.count_words(text) == sum(term_counts(text).values())


@pytest.mark.parametrize("text,end", [("Boil it.", True), ("Boil it. ", True), ('He said "boil it."', True),
                                      ("Really?", True), ("Wow!)", True), ("Steps:\n1.", False), ("It costs 3.", False),
                                      ("Boil it", False), ("Tips:\n", False), ("- Water\n", True), ("Boil it,\n", False),
                                      ("The egg", False), ("", False)])
def test_a_sentence_end_is_read_as_numpy_reads_it(text, end):
    assert _core.at_sentence_end(text) == end == _sentence_end(text)


@pytest.mark.parametrize("eos,target,answer", [
    (0.8, 5.0, "Put the egg in water. Boil it for ten minutes."),   # shorter, past the target, at a sentence end
    (0.8, 5.0, "Put the egg in water. Boil it for ten"),            # past it, mid-sentence: nothing
    (0.8, 50.0, "Put the egg in water."),                           # before it: nothing
    (-0.8, 50.0, "Put the egg in water."),                          # longer, before the target: lowered
    (-0.8, 5.0, "Put the egg in water. Boil it for ten minutes."),  # longer, past it: nothing
    (3.0, 2.0, "Put the egg in a pot of cold water and heat it until it boils.\n"),
])
def test_the_fused_rows_are_numpy_s(smollm, eos, target, answer):
    drift = _session(smollm, eos, target)
    steering = drift.bindings[0].steering()
    assert steering.eog_bias == 0 and steering.length_rate == pytest.approx(eos / 0.5)
    free = _core.Steering()
    free.coefficients, free.token_bias = steering.coefficients, steering.token_bias
    rows = drift.engine.fused_logits(0, free).astype(np.float64)
    eog = [t for t in range(smollm.n_vocab) if smollm.core.is_eog(t)]
    expected = _hazard(rows, eog, target, steering.length_rate, answer)
    got = drift.engine.fused_logits(0, steering, answer).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    changed = np.flatnonzero(np.abs(got - rows) > 1e-6)
    assert set(changed) <= set(eog)
    fires = (eos > 0 and answer.rstrip().endswith((".", "\n")) and sum(term_counts(answer).values()) > target) \
        or (eos < 0 and sum(term_counts(answer).values()) < target)
    assert bool(len(changed)) == fires


def test_a_shorter_taste_stops_greedy_decoding_at_a_sentence_end_past_its_target(smollm):
    plain = _session(smollm, 0.0, 0.0).generate(PROMPT, Sampling(temperature=0, max_tokens=120))
    assert _core.count_words(plain.text) > 40  # room to stop early
    steered = _session(smollm, 2.0, 12.0, 0.1).generate(PROMPT, Sampling(temperature=0, max_tokens=120))
    assert steered.finish_reason == "stop"
    assert 12 < _core.count_words(steered.text) < _core.count_words(plain.text)
    assert _sentence_end(steered.text)


def test_without_a_target_the_length_weight_is_today_s_constant_bias(smollm, tmp_path):
    """A formula saved before the target existed (no field) loads, binds the constant end-of-generation
    bias and no hazard, and decodes greedily exactly as that constant bias does in the engine."""
    drift = _session(smollm, 1.5, 0.0)
    models = {"llm": smollm.identity, "slm": smollm.identity}
    path = tmp_path / "old.json"
    drift.formula.save(path, models)
    saved = json.loads(path.read_text())
    assert "length_target" not in saved and saved["eos"] == 1.5
    loaded = Formula.load(path)
    assert loaded.length_target == 0.0 and dataclasses.replace(loaded, models=drift.formula.models) == drift.formula
    steering = Drift(formula=loaded).bindings[0].steering()
    assert steering.eog_bias == pytest.approx(1.5 / 0.5) and steering.length_target == 0 and steering.length_rate == 0
    # With a target the hazard replaces the constant bias, and before the target it leaves greedy decoding alone.
    ahead = _session(smollm, 1.5, 1e5)
    assert ahead.bindings[0].steering().eog_bias == 0
    base = _session(smollm, 0.0, 0.0).generate(PROMPT, Sampling(temperature=0, max_tokens=40))
    assert ahead.generate(PROMPT, Sampling(temperature=0, max_tokens=40)).tokens == base.tokens


def test_a_formula_with_a_target_saves_and_loads_it(smollm, tmp_path):
    formula = dataclasses.replace(_session(smollm, 0.7, 42.0).formula)
    path = tmp_path / "f.json"
    formula.save(path, {"llm": smollm.identity, "slm": smollm.identity})
    assert Formula.load(path).length_target == 42.0
    obj = json.loads(path.read_text())
    obj["length_target"] = -1
    path.write_text(json.dumps(obj))
    with pytest.raises(Exception, match="length_target"):
        Formula.load(path)


def test_joint_units_steer_with_the_joint_fit_s_own_coefficients():
    """units "joint": the top attributes weigh what the joint fit gave them (the unit direction times its
    norm); the paper's attribute model alone keeps its unit-norm p; unknown units are one line."""
    from test_choice import synthetic_profile

    profile, _ = synthetic_profile("attributes")
    raw = profile.choice.model.attributes
    assert "length" in profile.choice.family and 0 < np.linalg.norm(raw) != pytest.approx(1.0)
    unit, joint = profile.decoding_weights(units="unit"), profile.decoding_weights(units="joint")
    assert [a.id for a, _ in unit] == [a.id for a, _ in joint]
    ids = list(profile.attributes.ids)
    for (a, u), (_, j) in zip(unit, joint):
        assert j == pytest.approx(raw[ids.index(a.id)]) and u == pytest.approx(j / np.linalg.norm(raw))
    few, _ = synthetic_profile("attributes", n=8)  # below the joint model's pairs: the paper's p
    assert few.decoding_weights(units="joint") == few.decoding_weights(units="unit")
    with pytest.raises(Exception, match="unknown attribute units"):
        profile.decoding_weights(units="raw")


def test_the_length_target_is_the_tilted_median_of_the_answers_shown():
    from drift_cpp.fit.choice import length_target

    docs = [("a b", "a b c d e f g h"), ("a b c d", "a b c d e f g h i j k l m n o p")]  # 2, 8, 4, 16 words
    assert length_target(docs, 0.0, 1.0) in (4.0, 8.0)  # no taste: a median of what was shown
    assert length_target(docs, -3.0, 0.5) == 2.0 and length_target(docs, 3.0, 0.5) == 16.0
    words = np.array([2, 8, 4, 16.0])
    weights = np.exp(-0.4 * np.log1p(words) / 0.5)
    order = np.argsort(words)
    cum = np.cumsum(weights[order])
    assert length_target(docs, -0.4, 0.5) == words[order][np.argmax(cum >= cum[-1] / 2)]
