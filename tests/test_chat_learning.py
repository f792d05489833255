"""Preference capture in `drift-cpp chat`, driven through piped stdin on the embedded model."""

import os
import subprocess
import sys

import numpy as np

from drift_cpp.cli import SIDE_BY_SIDE_WIDTH
from drift_cpp.preferences import load_pairs
from drift_cpp.fit.profile import Profile

ATTRIBUTES = ("concise", "humor")
# --learn 1: every turn shows two samples (the profile is new, so decoding is plain) and reads a pick.
SCRIPT = ["Write one random word.", "1", "Write one random word about cats.", "2", "Write a random number.", "1",
          "Write a random color.", "s", "/undo"]


def _chat(tmp_path, lines, *extra):
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "chat", "--profile",
                           str(tmp_path / "me.json"), "--learn", "1", "--learn-include", ",".join(ATTRIBUTES),
                           "--temperature", "1", "--max-tokens", "8", *extra],
                          input="\n".join(lines) + "\n", env=env, capture_output=True, text=True, timeout=600)


def test_picks_land_in_the_pairs_file_and_the_profile_equals_a_fit_from_scratch(tmp_path):
    run = _chat(tmp_path, SCRIPT)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "new profile" in run.stderr
    out = run.stdout
    assert [line.split(" pairs")[0].rsplit(" ", 1)[-1] for line in out.splitlines() if "(learned: " in line
            or "(undone: " in line] == ["1", "2", "3", "2"]
    assert "(skipped)" in out and "plain decoding until 5 pairs" in out

    pairs = load_pairs(tmp_path / "me.pairs.jsonl")
    assert len(pairs) == 2  # the third pick was undone
    # The first pick chose answer 1 to the first prompt, the second answer 2 to the second prompt;
    # each pair's prompt is the conversation so far, which went on with the chosen answer.
    first, second = pairs
    assert first.prompt[-1].content == SCRIPT[0] and second.prompt[-1].content == SCRIPT[2]
    assert second.prompt[1].content == first.chosen
    table = out.split("\n")
    assert any(line.startswith(f"{first.chosen.splitlines()[0]:<{SIDE_BY_SIDE_WIDTH}} | ") for line in table)
    assert any(line.endswith(f" | {second.chosen.splitlines()[0]}") for line in table)

    profile = Profile.load(tmp_path / "me.json")
    assert profile.pair_ids == [p.id for p in pairs]
    # From scratch: `approximate` scores both pairs at once, at --threads 1, without the cache.
    fit = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "approximate",
                          str(tmp_path / "me.pairs.jsonl"), "-o", str(tmp_path / "scratch.json"), "--include",
                          ",".join(ATTRIBUTES), "--no-cache"], capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr
    scratch = Profile.load(tmp_path / "scratch.json")
    assert np.allclose(profile.W, scratch.W, rtol=1e-4, atol=1e-4)
    assert np.allclose(profile.L, scratch.L, rtol=1e-4, atol=1e-4)
    assert np.allclose(profile.p, scratch.p, atol=1e-4) and profile.selected == scratch.selected


def test_undo_of_the_only_pick_removes_the_profile_and_undo_with_nothing_is_an_error(tmp_path):
    run = _chat(tmp_path, SCRIPT[:2] + ["/undo", "/undo"])
    assert run.returncode == 0 and "Traceback" not in run.stderr
    assert "(undone: 0 pairs" in run.stdout and "nothing to undo" in run.stderr
    assert not (tmp_path / "me.json").exists() and not (tmp_path / "me.pairs.jsonl").exists()


def test_learning_needs_one_profile(tmp_path):
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "chat", "--learn", "1"],
                         input="", env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and run.stderr.startswith("error: /ab, /undo and --learn need one --profile")


def test_learning_into_a_whole_response_profile_scores_at_its_truncation(smollm, tmp_path):
    # Profiles made before truncation became the default were scored on whole responses; chat and the
    # server learn with a scorer at the default truncation, which must follow the profile's own.
    from drift_cpp.fit import learning
    from drift_cpp.score.attributes import builtin_attributes
    from drift_cpp.preferences import Message, PreferencePair
    from drift_cpp.score.scorer import Scorer

    long = " ".join(["The kettle sings while the eggs wait in the cold water."] * 12)  # well over 64 tokens
    pairs = [PreferencePair((Message("user", q),), c, r, f"p{i}", i + 1) for i, (q, c, r) in enumerate(
        [("Boil an egg?", "Boil it for nine minutes.", long), ("Tea?", long, "Steep it."),
         ("Toast?", "Two minutes.", "Toast the bread until golden, then butter it while warm.")])]
    attrs = builtin_attributes().select(include=ATTRIBUTES)
    whole = Scorer(smollm, max_response_tokens=0, progress=False)
    Profile.fit(pairs[:2], whole, attrs).save(tmp_path / "me.json")

    default = Scorer(smollm, max_response_tokens=64, progress=False)
    learning.add(tmp_path / "me.json", pairs, default, attrs)
    assert default.max_response_tokens == 64  # restored for the next user
    learned, scratch = Profile.load(tmp_path / "me.json"), Profile.fit(pairs, whole, attrs)
    assert learned.options.max_response_tokens == 0 and learned.pair_ids == scratch.pair_ids
    assert np.allclose(learned.W, scratch.W, atol=1e-4) and np.allclose(learned.L, scratch.L, atol=1e-4)
