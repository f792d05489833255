"""Issue 20's steering repros: every steering number is checked before any model loads, options that
would be ignored are refused, and plain decoding needs no sLM."""

import json

import pytest

from drift_cpp.errors import DriftError
from drift_cpp.steer.formula import Formula
from drift_cpp.fit.profile import Profile
from test_reliability import run


@pytest.fixture()
def weights(smollm, tmp_path):
    path = tmp_path / "w.json"
    Profile.with_weights(smollm, {"concise": 0.8, "humor": -0.6}).save(path)
    return path


@pytest.mark.parametrize("suffix, expected", [
    (":1e37", "the weight is 1e+37; beyond +-10"),
    (":nan", "the weight must be a finite number, got nan"),
    (":inf", "the weight must be a finite number, got inf"),
    (":1e308", "the weight must be a finite number, got 1e+308"),  # beyond float32
    (":2000", "the weight is 2000; beyond +-10"),
])
def test_blend_weights_are_named_and_refused_before_any_model(weights, tmp_cache, suffix, expected):
    code, err = run("generate", "--prompt", "Hi", "--profile", f"{weights}{suffix}", "--llm", "/nonexistent.gguf")
    assert code == 1 and f"--profile {weights}{suffix}: {expected}" in err  # not the missing model


@pytest.mark.parametrize("args, expected", [
    (["--negative-system", "Be terse.", "--cfg-scale", "3e38"], "--cfg-scale is 3e+38; beyond +-10"),
    (["--cfg-scale", "1.5"], "--cfg-scale needs --negative-system"),
    (["--plausibility", "1"], "--plausibility must be in [0, 1)"),
    (["--plausibility", "-0.1"], "--plausibility must be in [0, 1)"),
    (["--max-kl", "nan"], "--max-kl must be a finite number >= 0"),
    (["--frequency-penalty", "3"], "frequency_penalty must be in [-2, 2]"),
    (["--repeat-penalty", "0"], "repeat_penalty must be positive"),
    (["--dry-base", "0.5"], "dry_base >= 1"),
])
def test_steering_and_sampling_numbers_fail_before_any_model(args, expected):
    code, err = run("generate", "--prompt", "Hi", "--llm", "/nonexistent.gguf", *args)
    assert code in (1, 2) and expected in err and "nonexistent" not in err


def test_options_a_formula_would_ignore_are_refused(smollm, tmp_path):
    path = tmp_path / "f.json"
    Formula.plain().save(path, {"llm": smollm.identity})
    for args, named in ((["--beta", "0.3"], "--beta"), (["--system", "Be kind."], "--system"),
                        (["--top-attributes", "2"], "--top-attributes")):
        code, err = run("generate", "--prompt", "Hi", "--formula", path, "--llm", "/nonexistent.gguf", *args)
        assert code == 1 and f"cannot be combined with {named}" in err


def test_a_formula_whose_llm_weight_is_zero_is_refused(smollm, tmp_path):
    path = tmp_path / "f.json"
    Formula.plain().save(path, {"llm": smollm.identity})
    obj = json.loads(path.read_text())
    obj["terms"][0]["weight"] = 0.0
    path.write_text(json.dumps(obj))
    with pytest.raises(DriftError, match="the LLM's own weights sum to zero"):
        Formula.load(path)


def test_a_formula_saved_from_the_largest_blend_weight_loads(weights, tmp_path, tmp_cache):
    saved = tmp_path / "f.json"
    code, err = run("generate", "--prompt", "Hi", "--max-tokens", "1", "--profile", f"{weights}:10",
                    "--save-formula", saved)
    assert code == 0, err
    assert Formula.load(saved).steering  # drift-cpp reads back what it wrote


def test_plain_decoding_needs_no_slm(tmp_cache):
    """Gemma's vocabulary differs from the default sLM's; plain decoding never loads an sLM."""
    code, err = run("generate", "--prompt", "Hi", "--max-tokens", "2", "--llm", "gemma", "--temperature", "0")
    assert code == 0, err
