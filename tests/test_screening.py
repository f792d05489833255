"""Attribute screening: the rule (numpy only) and screened profiles on the real default model."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drift_cpp.fit import approximation, screening
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.errors import DriftError
from drift_cpp.preferences import load_pairs
from drift_cpp.fit.profile import FitOptions, Profile, reward_features
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer
from drift_cpp.fit.screening import ScreenOptions

ATTRS = ("concise", "formal", "humor", "analytic", "storyteller")
# Small enough that 8 pairs go through two screening decisions, each dropping attributes.
SCREEN = ScreenOptions(n0=3, keep=1, explore=1, block=2, seed=5)
OPTIONS = FitOptions(top=1)


# -- the rule ------------------------------------------------------------------------------------
def test_decision_points_and_blocks():
    o = ScreenOptions(n0=3, block=2)
    assert [screening.decision_point(j, o) for j in range(8)] == [0, 1, 2, 3, 3, 5, 5, 7]
    assert screening.blocks(0, 8, o) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    # an update starting mid-block finishes that block under the block's own decision point
    assert screening.blocks(4, 4, o) == [(4, 5), (5, 7), (7, 8)]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 30), st.integers(1, 30), st.integers(1, 6), st.integers(1, 5))
def test_blocks_cover_each_position_once_within_one_decision(start, count, n0, block):
    o = ScreenOptions(n0=n0, block=block)
    runs = screening.blocks(start, count, o)
    assert [j for a, b in runs for j in range(a, b)] == list(range(start, start + count))
    for a, b in runs:
        assert len({screening.decision_point(j, o) for j in range(a, b)}) == 1 or b <= n0


def test_columns_are_seeded_by_position():
    o = ScreenOptions(n0=2, keep=1, explore=2, seed=1)
    assert screening.columns(1, 6, [0], o) == list(range(6))  # before n0: every attribute
    a = [screening.columns(j, 6, [0, 3], o) for j in range(2, 30)]
    assert a == [screening.columns(j, 6, [0, 3], o) for j in range(2, 30)]
    assert all(len(c) == 4 and {0, 3} <= set(c) for c in a)
    assert len({tuple(c) for c in a}) > 1  # the explored ones change from pair to pair
    other = [screening.columns(j, 6, [0, 3], ScreenOptions(n0=2, keep=1, explore=2, seed=2)) for j in range(2, 30)]
    assert other != a


def test_impute_and_t_statistic_against_numpy():
    rng = np.random.default_rng(0)
    W, L = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    W[[1, 4, 6], 2] = L[[1, 4, 6], 2] = np.nan
    Wi, Li = screening.impute(W, L)
    scored = [0, 2, 3, 5, 7, 8]
    assert Wi[1, 2] == pytest.approx(W[scored, 2].mean()) and Li[4, 2] == pytest.approx(L[scored, 2].mean())
    assert np.array_equal(Wi[:, [0, 1, 3]], W[:, [0, 1, 3]])
    D = W - L
    t = screening.t_statistic(D)
    d = D[scored, 2]
    assert t[2] == pytest.approx(abs(d.mean()) / (d.std(ddof=1) / np.sqrt(len(d))))
    assert t[0] == pytest.approx(abs(D[:, 0].mean()) / (D[:, 0].std(ddof=1) / 3))
    full = rng.normal(size=(5, 3))
    assert screening.impute(full, full) == (full, full)  # nothing to impute: the very same arrays


def test_kept_is_top_t_and_top_fit():
    D = np.array([[3.0, 0.1, -5.0, 0.0], [3.1, -0.1, 5.0, 0.0], [2.9, 0.2, -4.0, 0.1]])
    p = np.array([0.1, 0.2, -0.9, 0.3])
    assert screening.kept(D, np.zeros_like(D), p, 1, ScreenOptions(keep=1)) == [0, 2]


def test_options_are_checked():
    with pytest.raises(DriftError, match="screen.n0 must be an integer >= 1"):
        ScreenOptions(n0=0).check()
    with pytest.raises(DriftError, match="not a screening option"):
        ScreenOptions.from_dict({"n0": 3, "typo": 1})


# -- screened profiles ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs():
    from drift_cpp.demo import DEMO_PAIRS
    return load_pairs(DEMO_PAIRS)[:8]


@pytest.fixture(scope="module")
def scorer(smollm, tmp_path_factory):
    # One cache for the module: every fit after the first reads its scores from it.
    return Scorer(smollm, cache=ScoreCache(tmp_path_factory.mktemp("cache") / "scores.sqlite"), max_response_tokens=0,
                  progress=False)  # whole responses


@pytest.fixture(scope="module")
def attrs():
    return builtin_attributes().select(ATTRS)


def test_exhaustive_is_todays_fit(scorer, pairs, attrs):
    W, L = reward_features(scorer, pairs, attrs.base, attrs.attributes)
    prof = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=None)
    assert np.array_equal(prof.W, W) and np.array_equal(prof.L, L)
    assert np.array_equal(prof.p, approximation.fit(W, L))
    assert np.array_equal(prof.sums, (W - L).sum(axis=0))


def test_screening_is_deterministic_and_scores_only_what_it_keeps(scorer, pairs, attrs):
    exhaustive = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=None)
    a = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=SCREEN)
    b = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=SCREEN)
    mask = np.isnan(a.W)
    assert np.array_equal(mask, np.isnan(b.W)) and np.array_equal(a.p, b.p)
    assert not mask[:SCREEN.n0].any() and mask[SCREEN.n0:].any()  # it did screen
    assert np.array_equal(mask, np.isnan(a.L))
    # what it scored are the exhaustive numbers: screening leaves out, never changes
    assert np.array_equal(a.W[~mask], exhaustive.W[~mask]) and np.array_equal(a.L[~mask], exhaustive.L[~mask])
    # each later pair: the kept attributes (top 1 by |t|, top 1 by |p|) and one explored
    assert all(2 <= (~row).sum() <= 3 for row in mask[SCREEN.n0:])
    W, L = screening.impute(a.W, a.L)
    assert np.array_equal(a.p, approximation.fit(W, L))
    other = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=ScreenOptions(**{**SCREEN.to_dict(), "seed": 6}))
    assert not np.array_equal(np.isnan(other.W), mask)


def test_screened_update_equals_screened_fit_from_scratch(scorer, pairs, attrs, tmp_path):
    whole = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=SCREEN)
    path = tmp_path / "p.json"
    Profile.fit(pairs[:4], scorer, attrs, OPTIONS, screen=SCREEN).save(path)  # ends inside a block
    saved = json.loads(path.read_text())
    assert saved["screen"]["options"] == SCREEN.to_dict() and saved["cost"]["items_scored"] >= 0
    part = Profile.load(path)
    assert part.update(pairs, scorer) == 4
    assert part.pair_ids == whole.pair_ids
    assert np.array_equal(np.isnan(part.W), np.isnan(whole.W))
    np.testing.assert_array_equal(part.W, whole.W)
    np.testing.assert_array_equal(part.p, whole.p)


def test_screened_profile_file_round_trip_and_checks(scorer, pairs, attrs, tmp_path):
    prof = Profile.fit(pairs, scorer, attrs, OPTIONS, screen=SCREEN)
    path = tmp_path / "p.json"
    prof.save(path)
    data = json.loads(path.read_text())
    row = data["features"]["rows"][-1]
    assert None in row["w"] and [x is None for x in row["w"]] == [x is None for x in row["l"]]
    back = Profile.load(path)
    np.testing.assert_array_equal(back.W, prof.W)
    assert back.screen == SCREEN and back.cost == prof.cost
    assert data["screen"]["kept"] and set(data["screen"]["kept"]) <= set(ATTRS)

    row["l"][row["w"].index(None)] = 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(DriftError, match=r"null in only one of 'w' and 'l'"):
        Profile.load(path)
    exhaustive = tmp_path / "e.json"
    Profile.fit(pairs[:2], scorer, attrs, OPTIONS, screen=None).save(exhaustive)
    data = json.loads(exhaustive.read_text())
    assert "screen" not in data
    data["features"]["rows"][0]["w"][0] = None
    exhaustive.write_text(json.dumps(data))
    with pytest.raises(DriftError, match=r"features.rows\[0\].w\[0\]' must be a finite number"):
        Profile.load(exhaustive)


def test_profile_records_truncation_and_updates_score_alike(smollm, scorer, pairs, attrs, tmp_path):
    prof = Profile.fit(pairs[:2], scorer, attrs, OPTIONS)
    assert prof.options.max_response_tokens == scorer.max_response_tokens == 0
    prof.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["options"]["max_response_tokens"] == 0
    with pytest.raises(DriftError, match="scored on whole responses and the scorer reads the first 16 response tokens"):
        Profile.load(tmp_path / "p.json").update(pairs, Scorer(smollm, max_response_tokens=16, progress=False))
