"""The guard on real logits: the plausibility constraint and the trust region against numpy, and greedy
decoding through them against an independent decoder over llama-cpp-python's Llama."""

import numpy as np
import pytest

from drift_cpp.steer.session import Drift, EngineOptions, Sampling
from drift_cpp.steer.build import drift_formula
from drift_cpp.fit.profile import Profile
from drift_cpp.runtime import _core

PROMPT = "How do I boil an egg?"
HISTORY = [{"role": "user", "content": PROMPT}]
# A strong steering (beta 0.1), so that the guard has something to refuse.
WEIGHTS = {"concise": 0.7, "internet_slang": 0.6, "formal": -0.4}
BETA = 0.1


def _session(smollm, plausibility=0.0, max_kl=0.0) -> Drift:
    profile = Profile.with_weights(smollm, WEIGHTS)
    drift = Drift(formula=drift_formula(None, [(profile, 1.0)], BETA).with_guard(plausibility, max_kl),
                  engine=EngineOptions(n_ctx=128))
    drift._sync(0, HISTORY)
    return drift


def _kl(p_logits, q_logits) -> float:
    lp = p_logits - np.logaddexp.reduce(p_logits)
    lq = q_logits - np.logaddexp.reduce(q_logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
def test_the_guard_admits_exactly_the_tokens_numpy_does(smollm, alpha):
    drift = _session(smollm, alpha)
    llm = drift.engine.logits(0, 0)  # the LLM's own term: sequence 0
    floor = np.float32(llm.max()) + np.float32(np.log(alpha))
    assert np.min(np.abs(llm - floor)) > 1e-4  # no token sits on the floor: the sets cannot differ by rounding
    expected = np.flatnonzero(llm >= floor)
    assert sorted(drift.engine.plausible(0, drift.bindings[0].steering())) == expected.tolist()
    assert 1 <= len(expected) < llm.size


def test_alpha_zero_admits_every_token(smollm):
    drift = _session(smollm, 0.0)
    assert len(drift.engine.plausible(0, drift.bindings[0].steering())) == smollm.n_vocab


@pytest.mark.parametrize("max_kl", [0.05, 0.5])
def test_the_trust_region_scales_the_steering_as_numpy_does(smollm, max_kl):
    drift = _session(smollm, 0.0, max_kl)
    llm = drift.engine.logits(0, 0).astype(np.float64)
    steering = drift.bindings[0].steering()
    free = _core.Steering()  # the same steering, without the region
    free.coefficients, free.token_bias, free.eog_bias = steering.coefficients, steering.token_bias, steering.eog_bias
    d = drift.engine.fused_logits(0, free).astype(np.float64) - llm
    kl = lambda s: _kl(llm + s * d, llm)  # noqa: E731
    assert kl(1.0) > max_kl  # the region binds at this strength
    lo, hi = 0.0, 1.0  # numpy's own bisection: the KL grows with the scale
    for _ in range(60):
        lo, hi = ((lo + hi) / 2, hi) if kl((lo + hi) / 2) <= max_kl else (lo, (lo + hi) / 2)
    fused = drift.engine.fused_logits(0, steering).astype(np.float64)
    scale = float((fused - llm) @ d / (d @ d))
    assert scale == pytest.approx(lo, abs=1e-4)
    np.testing.assert_allclose(fused, llm + lo * d, atol=1e-3)
    assert kl(scale) <= max_kl + 1e-4


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_each_greedy_step_is_numpy_s_choice_from_the_step_s_logits(smollm, alpha):
    """Greedy decoding, replayed one step at a time: the k-th token is the argmax that numpy's fusion,
    biases and guard give on the very logits the engine held at step k. (The rows come from the
    engine itself: this llama.cpp's logits change with how tokens are batched, by up to 0.8 here,
    so another decoder's rows would differ by more than the steering's margins.)"""
    n, overruled, previous = 10, 0, []
    for k in range(1, n + 1):
        drift = _session(smollm, alpha)
        result = drift.generate(PROMPT, Sampling(temperature=0, max_tokens=k))
        assert result.tokens[: k - 1] == previous  # the same steps as the shorter run
        steering = drift.bindings[0].steering()
        rows = [drift.engine.logits(0, j).astype(np.float64) for j in range(len(steering.coefficients))]
        fused = sum(c * row for c, row in zip(steering.coefficients, rows))
        for token, bias in steering.token_bias:
            fused[token] += bias
        admissible = rows[0] >= rows[0].max() + np.log(alpha) if alpha else np.ones(fused.size, bool)
        guarded = np.where(admissible, fused, -np.inf)
        top2 = np.sort(guarded)[-2:]
        assert top2[1] - top2[0] > 1e-3  # not a near-tie between float32 and float64 sums
        overruled += int(np.argmax(fused) != np.argmax(guarded))
        chosen = int(np.argmax(guarded))
        if smollm.core.is_eog(chosen):
            assert result.finish_reason == "stop" and len(result.tokens) == k - 1
            break
        assert result.tokens[k - 1] == chosen
        previous = result.tokens
    assert len(previous) >= 8
    if alpha:
        assert overruled >= 1  # the guard changed this answer: the comparison tests it


def test_repetition_samplers_reach_the_engine(smollm):
    """Plain greedy decoding of this prompt repeats one sentence; each anti-repetition sampler varies it.
    (A list that repeats items is no test for DRY: llama.cpp's default sequence breakers include the
    newline, which cuts every repeat short.)"""
    plain = Drift()
    prompt = "Repeat after me: la la la la la la la la"

    def distinct_4grams(text: str) -> float:
        words = text.split()
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        return len(set(grams)) / len(grams)

    base = distinct_4grams(plain.generate(prompt, Sampling(temperature=0, max_tokens=80)).text)
    assert base < 0.6  # the loop this test is about
    for field, value in (("dry_multiplier", 0.8), ("frequency_penalty", 1.5), ("repeat_penalty", 1.3)):
        text = plain.generate(prompt, Sampling(temperature=0, max_tokens=80, **{field: value})).text
        assert distinct_4grams(text) > base, (field, text)
