"""The per-user model choice on synthetic users whose true preference is known (numpy only, no model)."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from drift_cpp.fit import approximation, choice
from drift_cpp.errors import DriftError
from drift_cpp.evaluation import bow_rm, Fold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from synthetic_users import DISLIKED, LIKED, user  # noqa: E402

SEEDS = range(10)


def choices(kind, n):
    return [choice.choose(*user(kind, n, s)) for s in SEEDS]


def leading(c) -> str:
    """The family with the largest share of the model's margins."""
    return max(c.shares, key=c.shares.get)


@pytest.mark.parametrize("kind", ["length", "shorter", "lexical", "attributes"])
def test_each_true_family_leads_the_joint_model_from_40_pairs(kind):
    got = Counter(leading(c) for c in choices(kind, 40))
    assert got["length" if kind == "shorter" else kind] >= 9, got


@pytest.mark.parametrize("kind", ["length", "lexical", "noise"])
def test_a_handful_of_pairs_falls_back_to_the_attributes(kind):
    got = choices(kind, choice.MIN_PAIRS - 2)
    assert all(c.family == ("attributes",) and c.shares == {"attributes": 1.0} for c in got)


@pytest.mark.parametrize("kind", ["length", "shorter"])
def test_a_length_taste_either_way_leads_from_20_pairs(kind):
    got = choices(kind, 20)
    assert Counter(leading(c) for c in got)["length"] >= 8
    assert all((c.model.length > 0) == (kind == "length") for c in got)


def test_the_priors_shrink_what_few_pairs_support():
    # A word taste's weights grow as its pairs do: 10 pairs hardly move the prior.
    def strongest_word(n):
        return np.mean([abs(choice.word_rewards(c.model, 1)[0][1]) for c in choices("lexical", n)])
    assert strongest_word(10) < 0.5 * strongest_word(40)
    # A coin-flipper's length weight stays well below a true length taste's of as many pairs.
    def length_weight(kind):
        return np.mean([abs(c.model.length) for c in choices(kind, 40)])
    assert length_weight("noise") < 0.5 * length_weight("length")


def test_the_joint_model_predicts_each_taste_and_not_coin_flips():
    for kind, lo, hi in (("length", 0.7, 1), ("lexical", 0.55, 1), ("attributes", 0.65, 1), ("noise", 0, 0.6)):
        assert lo <= np.mean([c.accuracy for c in choices(kind, 40)]) <= hi, kind


def test_length_model_weight_has_the_taste_s_sign():
    W, L, docs = user("length", 40, 0)
    assert choice.fit(("length",), W, L, docs).length > 1
    flipped = [(r, c) for c, r in docs]
    assert choice.fit(("length",), L, W, flipped).length < -1


def test_lexical_model_is_bow_rm_and_its_word_weights_reproduce_its_margins():
    W, L, docs = user("lexical", 40, 1)
    train, test = list(range(30)), list(range(30, 40))
    model = choice.fit(("lexical",), W[train], L[train], [docs[i] for i in train])
    m = choice.margins(model, W[test], L[test], [docs[i] for i in test])
    # With bow_rm's l2 equal to its prior, the lexical family is bow_rm: the same held-out accuracy.
    fold = Fold(W, L, texts=docs)
    assert approximation.accuracy(m) == bow_rm(fold.take(train), fold.take(test), l2=choice.PRIORS.lexical)
    words = dict(choice.word_rewards(model, 50))
    assert all(words[w] > 0 for w in LIKED) and all(words[w] < 0 for w in DISLIKED)


def test_attribute_model_alone_is_the_profile_fit():
    W, L, docs = user("attributes", 30, 2)
    c = choice.choose(W, L, docs, family=("attributes",))
    assert c.family == ("attributes",)
    np.testing.assert_allclose(c.model.attributes, approximation.fit(W, L))


def test_choice_records_cv_accuracy_with_an_interval():
    c = choice.choose(*user("length", 40, 3))
    lo, hi = c.interval
    assert 0 <= lo < c.accuracy < hi <= 1
    assert set(c.cv) == {"attributes", "length", "lexical", "attributes+length+lexical"}
    assert c.family == choice.JOINT and sum(c.shares.values()) == pytest.approx(1)


def test_without_texts_only_attributes_and_a_given_family_is_kept():
    W, L, docs = user("length", 40, 4)
    assert choice.choose(W, L, None).family == ("attributes",)
    assert choice.choose(W, L, docs, family=("lexical",)).family == ("lexical",)
    with pytest.raises(DriftError, match="needs the responses' texts"):
        choice.choose(W, L, None, family=("length",))


@pytest.mark.parametrize("bad", ["", "size", "length+length", "auto+length"])
def test_bad_family_names_are_refused(bad):
    with pytest.raises(DriftError, match="unknown family"):
        choice.parse_family(bad)


# ------------------------------------------------------------------ in a profile
def synthetic_profile(kind, n=40, seed=0, family=choice.AUTO):
    """A profile over synthetic rows (no model is scored: the rows stand for its rewards)."""
    from drift_cpp.score.attributes import builtin_attributes
    from drift_cpp.fit.features import term_counts
    from drift_cpp.fit.profile import FitOptions, Profile

    attrs = builtin_attributes().select(["concise", "formal", "humor", "analytic"])
    W, L, docs = user(kind, n, seed, k=len(attrs))
    profile = Profile(model={"name": "synthetic", "sha256": "0" * 64}, attributes=attrs,
                      options=FitOptions(top=2, family=family), decode_exclude=[], pair_ids=[], W=np.zeros((0, 4)),
                      L=np.zeros((0, 4)), sums=np.zeros(4), p=np.zeros(4), selected=[],
                      created_at="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z", bows=[])
    profile._add_rows([f"p{j}" for j in range(n)], W, L, [(term_counts(c), term_counts(r)) for c, r in docs])
    profile._refit()
    return profile, docs


def test_profile_records_the_choice_and_reloads_it(tmp_path):
    from drift_cpp.fit.profile import Profile
    profile, docs = synthetic_profile("length")
    assert profile.choice.family == choice.JOINT and leading(profile.choice) == "length"
    assert profile.length_weight() > 1 and profile.uses_attributes() and profile.word_weights()
    path = tmp_path / "me.json"
    profile.save(path)
    loaded = Profile.load(path)
    assert loaded.choice.family == choice.JOINT and loaded.choice.cv == profile.choice.cv
    assert loaded.choice.shares == profile.choice.shares
    assert loaded.length_weight() == profile.length_weight() and loaded.bows == profile.bows
    W, L = profile.W, profile.L
    np.testing.assert_array_equal(choice.margins(loaded.choice.model, W, L, docs),
                                  choice.margins(profile.choice.model, W, L, docs))


def test_profile_show_says_the_choice_in_words(tmp_path):
    from click.testing import CliRunner
    from drift_cpp.cli import main
    profile, _ = synthetic_profile("length")
    profile.save(tmp_path / "me.json")
    out = CliRunner().invoke(main, ["profile", "show", str(tmp_path / "me.json")]).output
    assert "model: attributes+length+lexical (every family in one fit" in out and "95% interval" in out
    assert "share of the margins on your pairs: length " in out  # the strongest family first
    assert "you prefer longer answers (weight +" in out


def test_an_older_profile_loads_and_updates_as_attributes_only(tmp_path):
    import json
    from drift_cpp.fit.profile import Profile
    profile, _ = synthetic_profile("length")
    path = tmp_path / "old.json"
    profile.save(path)
    old = json.loads(path.read_text())
    del old["choice"], old["options"]["family"]
    old["schema_version"] = 1  # written before the family choice
    for row in old["features"]["rows"]:
        del row["bow"]
    path.write_text(json.dumps(old))
    loaded = Profile.load(path)
    assert loaded.choice is None and loaded.uses_attributes() and loaded.length_weight() == 0
    loaded._add_rows(["more"], profile.W[:1], profile.L[:1], [profile.bows[0]])  # what update does
    loaded._refit()
    assert loaded.bows is None and loaded.choice.family == ("attributes",)


def test_grouped_cross_validation_holds_out_whole_prompts():
    groups = np.repeat(np.arange(8), 5)  # 8 prompts, 5 pairs on each
    for seed in range(3):
        parts = choice._partition(groups.size, groups, choice.FOLDS, np.random.default_rng(seed))
        assert sorted(np.concatenate(parts).tolist()) == list(range(groups.size))
        assert all(len(set(groups[p])) * 5 == len(p) for p in parts)  # no prompt is split
    assert len(choice._partition(10, [0] * 10, choice.FOLDS, np.random.default_rng(0))) == choice.FOLDS  # one prompt


def test_a_length_prior_s_mean_is_where_a_strong_prior_holds_the_weight():
    W, L, docs = user("noise", 40, 6)
    pinned = choice.Priors(length=1e9, length_mean=0.7)
    assert choice.fit(("length",), W, L, docs, priors=pinned).length == pytest.approx(0.7, abs=1e-6)
    loose = choice.fit(("length",), W, L, docs, priors=choice.Priors(length_mean=0.7)).length
    assert loose != pytest.approx(0.7, abs=1e-3)  # with the default strength the pairs move it


# ----------------------------------------------------------------------- what a pick would teach
def _curvature_by_differences(objective, b, h=1e-4):
    """The Hessian of `objective` at b by central differences: a reference independent of the closed form."""
    k = len(b)
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            e_i, e_j = np.eye(k)[i] * h, np.eye(k)[j] * h
            H[i, j] = (objective(b + e_i + e_j) - objective(b + e_i - e_j) - objective(b - e_i + e_j)
                       + objective(b - e_i - e_j)) / (4 * h * h)
    return H


@pytest.mark.parametrize("family", [("attributes",), ("attributes", "length")])
def test_information_is_the_gain_in_log_determinant_of_the_fit_s_curvature(family):
    W, L, docs = user("length", 12, 3, k=4)
    Wn, Ln, docs_new = user("length", 5, 4, k=4)
    l2 = 10.0
    got = choice.information(family, W, L, docs, Wn, Ln, docs_new, l2)
    # The reference: the fit's penalized objective over its own (scaled) columns, its curvature by differences,
    # and the determinant's growth when each new pair's curvature is added, both ways as the fit counts it.
    X, Xt, _, offset, offset_t = choice._design(family, W - L, docs, docs_new, Wn - Ln, l2, choice.PRIORS)
    lam = 1.0
    if family == ("attributes",):
        X, Xt, lam = W - L, Wn - Ln, l2
    b = approximation.bradley_terry_coefficients(X, lam, offset=offset)

    def objective(c):
        z = X @ c + offset
        return float(2 * np.sum(np.logaddexp(0, -z)) + 0.5 * lam * c @ c)  # each pair both ways round
    H = _curvature_by_differences(objective, b)
    for x, z, want in zip(Xt, Xt @ b + offset_t, got):
        s = 1 / (1 + np.exp(-z))
        after = H + 2 * s * (1 - s) * np.outer(x, x)
        assert want == pytest.approx(0.5 * (np.linalg.slogdet(after)[1] - np.linalg.slogdet(H)[1]), rel=1e-4, abs=1e-9)


def test_a_pick_between_alike_answers_or_of_a_known_winner_teaches_little():
    W, L, docs = user("length", 12, 5, k=4)
    same = [(docs[0][0], docs[0][0])]
    zero = choice.information(("attributes", "length"), W, L, docs, W[:1], W[:1], same)
    assert zero[0] == pytest.approx(0, abs=1e-12)
    # The same pair either way round teaches the same.
    pair = choice.information(("attributes", "length"), W, L, docs, W[1:2], L[1:2], docs[1:2])
    flipped = choice.information(("attributes", "length"), W, L, docs, L[1:2], W[1:2], [docs[1][::-1]])
    assert pair == pytest.approx(flipped, rel=1e-9)
    # Once the fit holds many copies of a pair, asking it again teaches less than asking it of a fresh fit.
    many = choice.information(("attributes", "length"), np.vstack([W] + [W[1:2]] * 20), np.vstack([L] + [L[1:2]] * 20),
                              docs + [docs[1]] * 20, W[1:2], L[1:2], docs[1:2])
    assert many[0] < 0.5 * pair[0]
