"""experiments/learning_loop.py on the embedded model with a tiny budget: a simulated user's picks go
through chat's Learner into the pairs file, and the profile frozen after them is a fit from scratch."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import learning_loop  # noqa: E402
from drift_cpp.fit.profile import FitOptions, Profile  # noqa: E402
from drift_cpp.preferences import load_pairs  # noqa: E402
from drift_cpp.score.attributes import builtin_attributes  # noqa: E402
from drift_cpp.score.cache import ScoreCache  # noqa: E402
from drift_cpp.score.scorer import Scorer  # noqa: E402
from drift_cpp.steer.questions import Learner  # noqa: E402

USER, PICKS = "plain_words", 6  # at 24 tokens most answers are cut, so the length users would tie


def test_picks_land_in_the_pairs_file_and_the_frozen_profile_is_a_fit_from_scratch(tmp_path, smollm):
    out, cache = tmp_path / "loop", tmp_path / "cache.sqlite"
    argv = ["--out", str(out), "--users", USER, "--strategies", "samples", "--checkpoints", f"0,{PICKS}",
            "--held-out", "4", "--max-tokens", "24", "--threads", "1", "--cache", str(cache)]
    assert learning_loop.main(argv) == 0
    run = out / "runs" / f"{USER}-samples-s0"
    result = json.loads((run / "result.json").read_text("utf-8"))
    assert len(result["picks"]) == PICKS
    changes = [p["change"] for p in result["picks"]]  # the first pick has no earlier fit to move
    assert changes[0] is None and all(0 <= c <= 1 for c in changes[1:])

    pairs = load_pairs(run / "profile.pairs.jsonl")
    assert len(pairs) == PICKS
    judge = learning_loop.USERS[USER]
    for p in pairs:  # each is the user's pick, never a near-tie
        chosen, rejected = learning_loop.Answer(p.chosen), learning_loop.Answer(p.rejected)
        assert judge(chosen) > judge(rejected) and not learning_loop.near_tie(USER, chosen, rejected)

    frozen = Profile.load(run / "frozen" / f"profile-{PICKS}.json")
    attributes = builtin_attributes().select(include=learning_loop.SMOKE_ATTRIBUTES)
    fresh = Profile.fit(pairs, Scorer(smollm, cache=ScoreCache(cache)), attributes, FitOptions())
    assert frozen.pair_ids == fresh.pair_ids
    np.testing.assert_allclose(frozen.W, fresh.W, rtol=0, atol=1e-9)
    np.testing.assert_allclose(frozen.p, fresh.p, rtol=1e-9, atol=1e-12)
    assert frozen.selected == fresh.selected
    assert frozen.choice.family == fresh.choice.family and frozen.choice.cv == fresh.choice.cv

    # A rerun finds the finished run and measures nothing again.
    before = (run / "result.json").stat().st_mtime_ns
    assert learning_loop.main(argv) == 0
    assert (run / "result.json").stat().st_mtime_ns == before


def test_a_profile_settles_after_three_small_changes_in_the_joint_model(tmp_path):
    from drift_cpp.params import SETTLE_PICKS, SETTLE_TOL
    learner = Learner(tmp_path / "me.json", lambda: None, builtin_attributes())
    small, large = SETTLE_TOL / 2, SETTLE_TOL * 2
    learner.changes = [(n, small) for n in range(2, 11)]  # the attributes alone, before the joint model
    assert learner.settled() is None
    learner.changes += [(n, small) for n in range(11, 11 + SETTLE_PICKS - 1)]
    assert learner.settled() is None
    learner.changes.append((11 + SETTLE_PICKS - 1, small))
    assert learner.settled() == 11 + SETTLE_PICKS - 1
    learner.changes.append((11 + SETTLE_PICKS, large))
    assert learner.settled() is None


def test_a_dsp_persona_picks_by_its_judge_and_skips_its_near_ties():
    poetic = learning_loop.Answer("Ah, dear friend, oh how the river sings into the night, and we find our way.")
    corporate = learning_loop.Answer("Here's the plan: the team manager sets corporate goals, and success follows.")
    assert learning_loop.pick("literature", poetic, corporate) == 1
    assert learning_loop.pick("business", poetic, corporate) == 2
    assert learning_loop.pick("literature", poetic, poetic) is None
