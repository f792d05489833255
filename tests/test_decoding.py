"""Drift Decoding on real models: references, fusion, sampling, behaviour, KV reuse."""

import numpy as np
import pytest

from drift_cpp.steer.session import Drift, EngineOptions, Sampling
from drift_cpp.errors import DriftError
from drift_cpp.fit.profile import Profile

GREEDY = Sampling(temperature=0, max_tokens=64)
PROMPTS = ["Tell me about the ocean.", "How do plants grow?", "What makes a good friend?"]


def test_zero_weights_or_huge_beta_equal_plain_llama_greedy(smollm, reference_llm):
    messages = [{"role": "system", "content": "You are an AI assistant."}, {"role": "user", "content": PROMPTS[0]}]
    reference_llm.reset()
    prompt = smollm.tokenize_prompt(smollm.render(messages))
    expected = []
    for tok in reference_llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        if smollm.core.is_eog(tok) or len(expected) == 64:
            break
        expected.append(tok)
    zero = Profile.with_weights(smollm, {"concise": 0.0, "humor": 0.0})
    for drift in (Drift(profile=zero), Drift(profile=Profile.with_weights(smollm, {"concise": 1.0}), beta=1e30), Drift()):
        assert drift.generate(PROMPTS[0], GREEDY).tokens == expected


@pytest.mark.parametrize("system", [None, "You are a helpful assistant."])
def test_fused_logits_match_numpy(smollm, system):
    # system None: the LLM term and the base term share one sequence (same model, same prompt).
    prof = Profile.with_weights(smollm, {"concise": 0.6, "humor": -0.5, "formal": 0.3})
    drift = Drift(profile=prof, beta=0.5, system=system)
    drift.generate(PROMPTS[1], Sampling(temperature=0, max_tokens=5))
    drift._sync(0, [{"role": "user", "content": PROMPTS[1]}])
    slot = drift.bindings[0]
    assert len(slot.sequences) == 4 + (system is not None)
    h = {s.system: drift.engine.logits(0, j) for j, s in enumerate(slot.sequences)}
    attrs = prof.attributes
    h_base = h[attrs.base.prompt]
    expected = h[system or attrs.base.prompt] + sum(w / 0.5 * (h[attrs.get(a).prompt] - h_base)
                                                    for a, w in drift.active_weights)
    np.testing.assert_allclose(drift.engine.fused_logits(0, slot.steering()), expected, atol=1e-4)


def test_seeds_reproduce_and_differ(smollm):
    prof = Profile.with_weights(smollm, {"concise": 0.7, "humor": 0.7})
    s = lambda seed: Sampling(temperature=1.0, seed=seed, max_tokens=40)  # noqa: E731
    a = Drift(profile=prof).generate(PROMPTS[2], s(1)).text
    assert Drift(profile=prof).generate(PROMPTS[2], s(1)).text == a
    assert Drift(profile=prof).generate(PROMPTS[2], s(2)).text != a


def test_concise_weight_moves_length_both_ways(smollm):
    sampling = Sampling(temperature=0, max_tokens=120)
    plain = Drift()
    shorter = Drift(profile=Profile.with_weights(smollm, {"concise": 1.0}))
    longer = Drift(profile=Profile.with_weights(smollm, {"concise": -1.0}))
    length = lambda d: np.mean([len(d.generate(p, sampling).tokens) for p in PROMPTS])  # noqa: E731
    assert length(shorter) < length(plain) < length(longer)


def test_bad_settings_get_clear_errors(smollm, gemma):
    prof = Profile.with_weights(smollm, {"concise": 1.0})
    with pytest.raises(DriftError, match="do not share a vocabulary"):
        Drift(llm="gemma", slm="smollm2", profile=prof)  # a preset LLM alone takes its partner
    with pytest.raises(DriftError, match="beta must be positive"):
        Drift(beta=0)
    with pytest.raises(DriftError, match="max_tokens cannot be negative"):
        Drift().generate("hi", Sampling(max_tokens=-1))
    with pytest.raises(DriftError, match="unknown attribute id"):
        Drift(profile=prof, exclude=["not_an_attribute"])


def test_full_context_ends_with_length(smollm):
    result = Drift(engine=EngineOptions(n_ctx=256)).generate(" ".join(["Repeat after me:"] + ["la"] * 150), Sampling(temperature=0))
    assert result.finish_reason == "length"


def test_stop_strings_cut_the_text(smollm):
    result = Drift().generate("Count from 1 to 10, comma separated.", Sampling(temperature=0, stop=("5",)))
    assert result.finish_reason == "stop" and "5" not in result.text


def test_multi_turn_evaluates_only_the_new_turn(smollm):
    # Token-for-token equality with a batched re-evaluation does not hold on CPU: llama.cpp's
    # one-token decode path rounds differently from its batched path (up to ~1 logit here).
    # What must hold: a new turn evaluates only its own tokens, the caches hold exactly the
    # tokens of the history, and the next token agrees with re-evaluation.
    prof = Profile.with_weights(smollm, {"concise": 0.8, "formal": 0.4})
    chat = Drift(profile=prof)
    chat.chat("Hi! Who are you?", GREEDY)
    history = chat.history + [{"role": "user", "content": "What can you help me with?"}]
    sequences = chat.bindings[0].sequences
    held = [list(s.tokens) for s in sequences]
    prompts = [s.prompt(history) for s in sequences]
    evaluated = chat.engine.sync(0, prompts)
    assert all(p[: len(h)] == h for p, h in zip(prompts, held))  # the old turns are a prefix
    assert evaluated == sum(len(p) - len(h) for p, h in zip(prompts, held))
    steering = chat.bindings[0].steering()
    fresh = Drift(profile=prof)
    fresh.engine.sync(0, prompts)
    assert np.argmax(fresh.engine.fused_logits(0, steering)) == np.argmax(chat.engine.fused_logits(0, steering))
