"""drift-cpp as a plugin of Simon Willison's `llm`, run through llm's own CLI (click's CliRunner on llm.cli.cli)
on the embedded model: its answers must be those of drift-cpp's own session for the same prompt and profile."""

import json

import pytest
from click.testing import CliRunner
from llm.cli import cli

from drift_cpp.fit.profile import Profile
from drift_cpp.models import ModelOptions
from drift_cpp.steer.build import drift_formula
from drift_cpp.steer.session import Drift, Sampling

PROMPT = "Plan my weekend."
TOKENS = 24
GREEDY = ["-o", "temperature", "0", "-o", "max_tokens", str(TOKENS), "-o", "threads", "1"]


@pytest.fixture(autouse=True)
def llm_home(tmp_path, monkeypatch):
    """llm keeps its logs and settings in LLM_USER_PATH: a fresh one per test, not the user's."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))


@pytest.fixture(scope="module")
def profile_path(smollm, tmp_path_factory):
    """A profile on the embedded model whose attributes steer these answers from their first tokens."""
    path = tmp_path_factory.mktemp("profiles") / "me.json"
    Profile.with_weights(smollm, {"humor": 0.8, "concise": -0.6}).save(path)
    return path


def llm_cli(*args, stdin=None) -> str:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def session(formula=None, **kwargs) -> Drift:
    return Drift(formula=formula, options=ModelOptions(threads=1), **kwargs)


GREEDY_SAMPLING = Sampling(temperature=0, max_tokens=TOKENS)


def test_the_entry_point_registers_every_installed_preset():
    assert "drift-cpp" in [p["name"] for p in json.loads(llm_cli("plugins"))]
    assert "DriftCpp: drift-cpp/smollm2 (aliases: drift-cpp)" in llm_cli("models").splitlines()
    options = llm_cli("models", "--options", "-m", "drift-cpp")
    assert "profile: str" in options and "beta: float" in options and "max_tokens: int" in options


def test_plain_answer_is_the_sessions():
    expected = session().generate(PROMPT, GREEDY_SAMPLING).text
    assert llm_cli("-m", "drift-cpp", *GREEDY, PROMPT) == expected + "\n"


def test_personalized_answer_is_the_sessions(profile_path):
    plain = session().generate(PROMPT, GREEDY_SAMPLING).text
    expected = session(profile=str(profile_path)).generate(PROMPT, GREEDY_SAMPLING).text
    assert expected != plain  # the profile steers this answer
    assert llm_cli("-m", "drift-cpp", "-o", "profile", str(profile_path), *GREEDY, PROMPT) == expected + "\n"
    # beta and the guard reach the formula: stronger and unguarded, another answer
    formula = drift_formula(None, [(Profile.load(profile_path), 1.0)], 0.2, plausibility=0.0)
    strong = session(formula).generate(PROMPT, GREEDY_SAMPLING).text
    assert strong != expected
    assert llm_cli("-m", "drift-cpp", "-o", "profile", str(profile_path), "-o", "beta", "0.2",
                   "-o", "plausibility", "0", *GREEDY, PROMPT) == strong + "\n"


def test_chat_turns_are_the_sessions(profile_path):
    """`llm chat` with piped stdin: the second turn answers the conversation, as Drift.chat does."""
    drift = session(profile=str(profile_path))
    turns = [PROMPT, "What about Sunday?"]
    expected = [drift.chat(turn, GREEDY_SAMPLING).text for turn in turns]
    assert drift.generate(turns[1], GREEDY_SAMPLING).text != expected[1]  # the second answer reads the first turn
    out = llm_cli("chat", "-m", "drift-cpp", "-o", "profile", str(profile_path), *GREEDY,
                  stdin="\n".join(turns) + "\nquit\n")
    # click echoes the piped input after each "> " prompt
    assert out.endswith("".join(f"> {turn}\n{answer}\n" for turn, answer in zip(turns, expected)) + "> quit\n")


def test_a_missing_profile_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["-m", "drift-cpp", "-o", "profile", str(tmp_path / "none.json"), "hi"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "none.json" in result.output
    assert result.output.count("\n") == 1
