"""A pick kept at once and learned in the background (chat's way): the pick is in the pairs file before any
scoring, what is learned equals the synchronous add, and a pick that cannot be scored is refused before it
is written. The embedded SmolLM2, a real scorer and cache."""

import numpy as np
import pytest

from drift_cpp.errors import DriftError
from drift_cpp.fit import learning
from drift_cpp.fit.profile import Profile
from drift_cpp.preferences import load_pairs
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer
from drift_cpp.steer.questions import Learner, Question

ATTRS = builtin_attributes().select(include=["concise", "humor"])
PICKS = [("Is it raining?", "Yes, take an umbrella.", "It might be raining, or it might not; the sky is hard to read."),
         ("Name a fruit.", "An apple.", "Fruit is a broad category with many members, such as apples and pears."),
         ("Say hi.", "Hi!", "Hello there, it is very nice to meet you today, I hope you are well.")]


def _question(prompt, a, b):
    return Question([{"role": "user", "content": prompt}], (a, b), ("1", "2"), "samples")


def test_a_pick_is_kept_before_it_is_scored_and_learned_as_a_synchronous_add(smollm, tmp_path):
    scorer = Scorer(smollm, cache=ScoreCache(tmp_path / "cache.sqlite"))
    background = Learner(tmp_path / "bg.json", lambda: scorer, ATTRS)
    sync = Learner(tmp_path / "sync.json", lambda: scorer, ATTRS)
    for prompt, a, b in PICKS:
        assert background.save_pick(_question(prompt, a, b), 1)
        # Kept now: in the pairs file, whatever the worker is doing.
        assert load_pairs(learning.pairs_path(tmp_path / "bg.json"))[-1].chosen == a
        update = background.learned()
        assert update.changed == 1 and update.profile.pair_ids[-1] == _question(prompt, a, b).pair(1).id
        assert background.learned() is None  # reported once
        sync.record(_question(prompt, a, b), 1)  # (it reads the first learner's scores from the cache)
    got, want = Profile.load(tmp_path / "bg.json"), Profile.load(tmp_path / "sync.json")
    assert got.pair_ids == want.pair_ids and got.selected == want.selected
    np.testing.assert_array_equal(got.W, want.W)
    np.testing.assert_array_equal(got.p, want.p)
    assert [c for c in background.changes] == [c for c in sync.changes]
    # The same pick again is known: nothing to learn, nothing pending.
    assert not background.save_pick(_question(*PICKS[0]), 1) and background.learned() is None


def test_a_pick_that_cannot_be_scored_is_refused_before_it_is_written(smollm, tmp_path):
    scorer = Scorer(smollm, cache=None)
    learner = Learner(tmp_path / "me.json", lambda: scorer, ATTRS)
    too_long = "Tell me more about this. " * 600  # more than the scorer's context under any prompt
    with pytest.raises(DriftError, match="context"):
        learner.save_pick(_question(too_long, "Yes.", "No."), 1)
    assert scorer.cost.tokens_evaluated == 0 and not learning.pairs_path(tmp_path / "me.json").exists()
    assert learner.save_pick(_question(*PICKS[0]), 2) and learner.learned().profile.n_pairs == 1


def test_a_pick_whose_learning_failed_stays_kept_and_the_next_add_learns_it(smollm, tmp_path):
    scorer = Scorer(smollm, cache=None)
    target = tmp_path / "me.json"
    assert learning.save(target, [_question(*PICKS[0]).pair(1)], scorer, ATTRS) == 1
    assert scorer.cost.tokens_evaluated == 0 and not target.exists()  # as if the worker had died before the profile was written
    update = learning.add(target, [_question(*PICKS[1]).pair(1)], scorer, ATTRS)
    assert update.changed == 2 and update.profile.n_pairs == 2
    assert [p.chosen for p in load_pairs(learning.pairs_path(target))] == [PICKS[0][1], PICKS[1][1]]
