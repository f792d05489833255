"""Grammars and logit_bias on the fused logits (issue 23): real model, llama.cpp's own grammar sampler,
schemas converted by llama-cpp-python's converter; the guard's choice under a grammar against numpy."""

import json

import numpy as np
import pytest
from llama_cpp import llama_grammar

from drift_cpp.errors import DriftError
from drift_cpp.fit.profile import Profile
from drift_cpp.models import ModelOptions
from drift_cpp.steer.binding import check_sampling_for
from drift_cpp.steer.build import drift_formula
from drift_cpp.steer.session import Drift, EngineOptions, Sampling

PROMPT = "Tell me about the ocean."
# A strong steering (beta 0.1) under a tight guard, so that the grammar and the guard disagree.
WEIGHTS = {"concise": 0.7, "internet_slang": 0.6, "formal": -0.4}
# Every value bounded, so any answer the grammar allows ends well within MAX_TOKENS.
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["place", "stars", "open"],
          "properties": {"place": {"type": "string", "enum": ["harbour", "reef", "trench"]},
                         "stars": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
                         "open": {"type": "boolean"}}}
MAX_TOKENS = 40


def _session(smollm, plausibility=0.0, steered=True) -> Drift:
    profiles = [(Profile.with_weights(smollm, WEIGHTS), 1.0)] if steered else []
    return Drift(formula=drift_formula(None, profiles, 0.1).with_guard(plausibility, 0.0),
                 engine=EngineOptions(n_ctx=256), options=ModelOptions(threads=1))


def conforms(value, schema=SCHEMA) -> bool:
    """The few JSON-schema rules SCHEMA uses, checked by hand."""
    return (isinstance(value, dict) and set(value) == set(schema["required"])
            and all(v in schema["properties"][k]["enum"] and type(v) is type(schema["properties"][k]["enum"][0])
                    if "enum" in schema["properties"][k] else isinstance(v, bool) for k, v in value.items()))


@pytest.mark.parametrize("steered", [False, True])
def test_a_schema_s_answer_parses_and_conforms_under_steering_and_the_guard(smollm, steered):
    drift = _session(smollm, 0.5 if steered else 0.0, steered)
    grammar = llama_grammar.json_schema_to_gbnf(json.dumps(SCHEMA))
    for seed in range(5):
        result = drift.generate(PROMPT, Sampling(temperature=0.8, seed=seed, max_tokens=MAX_TOKENS, grammar=grammar))
        assert result.finish_reason == "stop", result.text
        assert conforms(json.loads(result.text)), result.text
    # without it, this prompt's answers are no JSON at all
    with pytest.raises(ValueError):
        json.loads(drift.generate(PROMPT, Sampling(temperature=0.8, seed=0, max_tokens=MAX_TOKENS)).text)


def _allowed(smollm, chars: str) -> np.ndarray:
    """The tokens a grammar `root ::= [chars]+` allows first: those whose every byte is one of chars."""
    pieces = [smollm.core.detokenize([t]) for t in range(smollm.n_vocab)]
    return np.array([bool(p) and all(chr(b) in chars for b in p) for p in pieces])


@pytest.mark.parametrize("chars, llm_top_allowed", [("0123456789", False),
                                                    ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ", True)])
def test_the_guard_admits_the_plausible_tokens_among_those_the_grammar_allows(smollm, chars, llm_top_allowed):
    """The first greedy token is numpy's: the argmax of the fused logits over the allowed tokens whose
    p_LLM is within alpha of the best allowed token's. Where the grammar rules out the LLM's own top
    token (digits here), that floor lies below the plain guard's, whose tokens the grammar all refuses."""
    alpha = 0.5
    drift = _session(smollm, alpha)
    klass = "".join("\\x%02x" % ord(c) for c in chars)
    result = drift.generate(PROMPT, Sampling(temperature=0, max_tokens=1, grammar=f"root ::= [{klass}]+"))
    steering = drift.bindings[0].steering()
    llm = drift.engine.logits(0, 0).astype(np.float64)
    fused = drift.engine.fused_logits(0, steering).astype(np.float64)
    allowed = _allowed(smollm, chars)
    assert bool(allowed[np.argmax(llm)]) == llm_top_allowed
    plain_guard = llm >= llm.max() + np.log(alpha)
    assert (plain_guard & allowed).any() == llm_top_allowed
    floor = llm[allowed].max() + np.log(alpha)
    assert np.min(np.abs(llm - floor)) > 1e-4  # no token sits on the floor: float32 and float64 agree
    admitted = allowed & (llm >= floor)
    guarded = np.where(admitted, fused, -np.inf)
    top2 = np.sort(guarded)[-2:]
    assert top2[1] - top2[0] > 1e-3 or admitted.sum() == 1
    assert result.tokens == [int(np.argmax(guarded))]


def test_logit_bias_minus_100_keeps_a_token_out_and_plus_100_brings_one_in_past_the_guard(smollm):
    drift = _session(smollm, 0.1)
    first = drift.generate(PROMPT, Sampling(temperature=0, max_tokens=1)).tokens[0]
    for seed in range(3):
        kept_out = drift.generate(PROMPT, Sampling(temperature=0.8, seed=seed, max_tokens=16,
                                                   logit_bias=((first, -100.0),)))
        assert first not in kept_out.tokens and kept_out.tokens
    # the guard's reference carries the bias: a token the LLM finds implausible is admitted, and chosen
    llm = drift.engine.logits(0, 0)
    unlikely = int(np.argsort(llm)[len(llm) // 2])
    assert not smollm.core.is_eog(unlikely)
    brought = drift.generate(PROMPT, Sampling(temperature=0, max_tokens=1, logit_bias=((unlikely, 100.0),)))
    assert brought.tokens == [unlikely]


def test_a_bad_grammar_or_bias_fails_in_one_line_before_any_token(smollm):
    drift = _session(smollm, 0.1)
    for sampling, words in ((Sampling(grammar="root ::= undefined-rule"), "GBNF"),
                            (Sampling(logit_bias=((smollm.n_vocab, -1.0),)), "no token"),
                            (Sampling(logit_bias=((1, -101.0),)), "[-100, 100]"),
                            (Sampling(logit_bias=((1.5, 1.0),)), "token ids")):
        for attempt in (lambda: check_sampling_for(smollm, sampling), lambda: drift.generate(PROMPT, sampling)):
            with pytest.raises(DriftError) as e:
                attempt()
            assert words in str(e.value) and "\n" not in str(e.value)


def test_generate_answers_in_a_schema_s_json_and_names_a_bad_file_in_one_line(smollm, tmp_path, capfd):
    from test_reliability import run, runner

    from drift_cpp.cli import main
    schema, bad_json, bad_gbnf = tmp_path / "s.json", tmp_path / "bad.json", tmp_path / "bad.gbnf"
    schema.write_text(json.dumps(SCHEMA))
    bad_json.write_text('{"type": ')
    bad_gbnf.write_text("root ::= undefined-rule\n")
    Profile.with_weights(smollm, {"concise": 0.8, "humor": -0.6}).save(tmp_path / "alice.json")
    for profile in ([], ["--profile", tmp_path / "alice.json"]):
        args = ["--threads", "1", "generate", "--prompt", PROMPT, "--json", "--temperature", "0.8",
                "--max-tokens", MAX_TOKENS, "--json-schema", schema, *profile]
        result = runner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0 and conforms(json.loads(json.loads(result.stdout)["text"])), result.stdout
    for args, words in ((["--json-schema", bad_json], f"{bad_json}:1: invalid JSON"),
                        (["--grammar", bad_gbnf], f"{bad_gbnf}: Undefined rule identifier 'undefined-rule'"),
                        (["--grammar", tmp_path / "none.gbnf"], "none.gbnf: file not found"),
                        (["--grammar", bad_gbnf, "--json-schema", schema], "give one")):
        code, err = run("--threads", "1", "generate", "--prompt", PROMPT, *args)
        assert code == 1 and words in err, err
        assert "root ::=" not in capfd.readouterr().err  # llama.cpp's own report of the grammar is caught
