"""Few-shot evaluation (drift_cpp.evaluation) on synthetic data, and the DSP experiment end to end."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from drift_cpp.fit import approximation, features
from drift_cpp import evaluation as ev
from drift_cpp.errors import DriftError

REPO = Path(__file__).resolve().parent.parent
FEATURE_METHODS = ["best_single", "drift", "logistic", "bt", "standardize"]


def planted(seed=0, n=200, k=6, margin=1.5):
    """Along a planted direction every chosen response scores >= margin, every rejected <= -margin."""
    rng = np.random.default_rng(seed)
    true = np.array([2.0, -1.5, 0.0, 1.0, 0.0, -0.5, 0.3, 0.0][:k])
    true /= np.linalg.norm(true)
    W = rng.normal(size=(n, k))
    L = rng.normal(size=(n, k))
    W += np.maximum(margin - W @ true, 0.0)[:, None] * true
    L -= np.maximum(margin + L @ true, 0.0)[:, None] * true
    return W, L


def words(rng, n, vocab=("the", "a", "model", "answer", "data", "river", "stone", "light", "plan", "note")):
    return " ".join(rng.choice(vocab, size=n))


def random_texts(rng, n):
    """Pairs with no signal at all: random words, random lengths."""
    return [(words(rng, rng.integers(5, 40)), words(rng, rng.integers(5, 40))) for _ in range(n)]


def swap_randomly(rng, W, L, texts):
    """Shuffle the labels: each pair's chosen and rejected swap with probability 1/2."""
    flip = rng.random(len(texts)) < 0.5
    W2, L2 = np.where(flip[:, None], L, W), np.where(flip[:, None], W, L)
    texts2 = [(r, c) if f else (c, r) for (c, r), f in zip(texts, flip)]
    return W2, L2, texts2


def halves(W, L, texts=None, n_train=None):
    n_train = n_train or len(W) // 2
    fold = ev.Fold(W=W, L=L, texts=texts)
    return fold.take(np.arange(n_train)), fold.take(np.arange(n_train, len(W)))


# ------------------------------------------------------------------ baselines
def test_longer_prefers_the_longer_response():
    rng = np.random.default_rng(1)
    base = [words(rng, rng.integers(5, 30)) for _ in range(30)]
    texts = [(b + " and more", b[: rng.integers(1, len(b) + 1)]) for b in base]
    fold = ev.Fold(texts=texts)
    assert ev.longer(fold, fold) == 1.0
    swapped = ev.Fold(texts=[(r, c) for c, r in texts])
    assert ev.longer(swapped, swapped) == 0.0
    assert ev.longer(fold, ev.Fold(texts=[("abc", "xyz"), ("abcd", "ab")])) == 0.75  # a tie counts 0.5


def test_best_single_finds_the_attribute_and_its_sign():
    rng = np.random.default_rng(2)
    n, k = 80, 7
    W, L = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    gap = np.abs(rng.normal(size=n)) + 0.5
    W[:, 4] = L[:, 4] - gap  # chosen responses always score LOWER on attribute 4
    train, test = halves(W, L)
    assert ev.best_single(train, test) == 1.0
    # it is Drift restricted to its top attribute
    for seed in range(5):
        r = np.random.default_rng(seed)
        tr, te = halves(r.normal(size=(40, 5)), r.normal(size=(40, 5)))
        assert ev.best_single(tr, te) == ev.drift(tr, te, n_attributes=1)


@pytest.mark.parametrize("method", ["drift", "logistic", "bt", "standardize", "with_length"])
def test_feature_methods_are_perfect_on_planted_data(method):
    W, L = planted(seed=3)
    rng = np.random.default_rng(3)
    texts = random_texts(rng, len(W))
    train, test = halves(W, L, texts)
    assert ev.evaluate(method, train, test) == 1.0


def test_with_length_learns_length_when_rewards_are_noise():
    rng = np.random.default_rng(4)
    n = 200
    W, L = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
    texts = [(words(rng, rng.integers(20, 40)), words(rng, rng.integers(2, 18))) for _ in range(n)]
    train, test = halves(W, L, texts)
    assert ev.with_length(train, test, l2=0.01) == 1.0
    assert abs(ev.bt(train, test) - 0.5) < 0.15  # the rewards alone carry nothing


def test_standardize_ignores_the_scale_and_offset_of_each_attribute():
    W, L = planted(seed=5, n=60, margin=0.3)
    rng = np.random.default_rng(5)
    W, L, _ = swap_randomly(rng, W, L, [("", "")] * len(W))  # an imperfect problem
    scale = np.array([100.0, 0.01, 3.0, 1.0, 50.0, 0.2])
    shift = np.array([5.0, -3.0, 0.0, 100.0, 1.0, -7.0])
    a = [ev.standardize(*halves(W, L, n_train=30)), ev.standardize(*halves(W, L, n_train=30), n_attributes=2)]
    b = [ev.standardize(*halves(W * scale + shift, L * scale + shift, n_train=30)),
         ev.standardize(*halves(W * scale + shift, L * scale + shift, n_train=30), n_attributes=2)]
    assert a == b
    # plain Drift is not scale-free: the scaling changes its answer on this data
    assert ev.drift(*halves(W, L, n_train=30)) != ev.drift(*halves(W * scale, L * scale, n_train=30))


def test_drift_top_m_keeps_only_the_largest_weights():
    rng = np.random.default_rng(6)
    n, k = 100, 8
    W, L = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    W[:, 0] += 3.0  # a strong attribute
    W[:, 1] += 0.2  # a weak one
    train, test = halves(W, L)
    p = approximation.fit(train.W, train.L)
    kept = ev.methods._keep_top(p, 2)
    assert np.count_nonzero(kept) == 2 and set(np.flatnonzero(kept)) == set(approximation.top_m(p, 2))
    assert ev.drift(train, test, n_attributes=k) == ev.drift(train, test)
    assert ev.drift(train, test, n_attributes=1) > 0.9
    with pytest.raises(DriftError):
        ev.drift(train, test, n_attributes=0)


def test_methods_are_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(7)
    n = 400
    W, L = planted(seed=7, n=n)
    texts = [(words(rng, rng.integers(5, 40)) + " splendid", words(rng, rng.integers(5, 40)) + " dreadful")
             for _ in range(n)]
    W, L, texts = swap_randomly(rng, W, L, texts)
    methods = FEATURE_METHODS + ["longer", "with_length", "bow_rm"]
    r = ev.cross_validate(W, L, texts, ks=[100], n_splits=8, seed=0, methods=methods)
    for label in methods:
        assert abs(r["methods"][label]["mean"][0] - 0.5) < 0.06, (label, r["methods"][label]["mean"])


# ---------------------------------------------------------------------- bow_rm
def planted_words(rng, n):
    """Chosen responses say 'splendid', rejected ones 'dreadful'; lengths carry no signal."""
    out = []
    for _ in range(n):
        c = words(rng, rng.integers(5, 40)).split()
        r = words(rng, rng.integers(5, 40)).split()
        c.insert(rng.integers(0, len(c) + 1), "splendid")
        r.insert(rng.integers(0, len(r) + 1), "dreadful")
        out.append((" ".join(c), " ".join(r)))
    return out


def test_bow_rm_learns_a_planted_word_preference():
    rng = np.random.default_rng(8)
    texts = planted_words(rng, 120)
    train, test = ev.Fold(texts=texts[:20]), ev.Fold(texts=texts[20:])
    assert ev.bow_rm(train, test) == 1.0
    assert abs(ev.longer(train, test) - 0.5) < 0.15  # length is no shortcut here
    flipped = ev.Fold(texts=[(r, c) for c, r in texts[20:]])
    assert ev.bow_rm(train, flipped) == 0.0
    # a vocabulary from the training pairs only: unseen words carry no weight
    unseen = ev.Fold(texts=[(c.replace("splendid", "marvellous"), r.replace("dreadful", "awful")) for c, r in texts[20:]])
    assert abs(ev.bow_rm(train, unseen) - 0.5) < 0.2


def test_bow_rm_equals_the_full_vocabulary_fit():
    """The row-space fit is exact: the same margins as Bradley-Terry on every tfidf column."""
    rng = np.random.default_rng(9)
    texts = planted_words(rng, 40)
    train_t, test_t = texts[:15], texts[15:]
    vocab, idf = ev.tfidf_fit([t for pair in train_t for t in pair])
    X = ev.tfidf_transform([c for c, _ in train_t], vocab, idf) - ev.tfidf_transform([r for _, r in train_t], vocab, idf)
    Xt = ev.tfidf_transform([c for c, _ in test_t], vocab, idf) - ev.tfidf_transform([r for _, r in test_t], vocab, idf)
    for l2 in (0.1, 1.0):
        b = approximation.fit_bradley_terry(X, np.zeros_like(X), l2=l2)
        Z, Zt = features._bow_design(tuple(train_t), tuple(test_t))
        c = approximation.fit_bradley_terry(Z, np.zeros_like(Z), l2=l2)
        np.testing.assert_allclose(Zt @ c, Xt @ b, atol=1e-8)


def test_tfidf_features():
    vocab, idf = ev.tfidf_fit(["the cat sat", "the dog"])
    assert sorted(vocab) == ["cat", "dog", "sat", "the"]
    assert idf[vocab["the"]] == pytest.approx(1.0)  # in every document
    assert idf[vocab["cat"]] == pytest.approx(np.log(3 / 2) + 1)
    X = ev.tfidf_transform(["The the cat, unknown!", ""], vocab, idf)
    assert np.linalg.norm(X[0]) == pytest.approx(1.0) and not X[1].any()
    assert X[0, vocab["dog"]] == 0 and X[0, vocab["the"]] > 0
    assert ev.tokenize("Don't STOP-now") == ["don't", "stop", "now"]


# ------------------------------------------------------------ split protocols
def spy(monkeypatch):
    calls = []

    def record(train, test):
        calls.append(([c for c, _ in train.texts], [c for c, _ in test.texts]))
        return 0.5

    monkeypatch.setitem(ev.BASELINES, "spy", record)
    return calls


def test_cross_validate_shapes_splits_and_determinism(monkeypatch):
    rng = np.random.default_rng(10)
    n = 60
    W, L = planted(seed=10, n=n)
    texts = [(f"c{i}", f"r{i}") for i in range(n)]
    calls = spy(monkeypatch)
    r = ev.cross_validate(W, L, texts, ks=[40, 5, 10, 55], n_splits=4, seed=3, methods=["spy", "drift", "bt"])
    assert r["ks"] == [5, 10, 40] and r["skipped_ks"] == [55]  # 55 would leave < MIN_TEST = 10
    for label in ("spy", "drift", "bt"):
        m = r["methods"][label]
        assert len(m["mean"]) == len(m["std"]) == 3
        assert np.array(m["scores"]).shape == (3, 4)
        assert m["mean"] == pytest.approx(np.mean(m["scores"], axis=1).tolist())
        assert m["std"] == pytest.approx(np.std(m["scores"], axis=1).tolist())
    assert len(calls) == 3 * 4
    for (train, test), k in zip(calls, [5] * 4 + [10] * 4 + [40] * 4):
        assert len(train) == k and len(test) == n - k and not set(train) & set(test)
    assert len({tuple(sorted(t)) for t, _ in calls[:4]}) == 4  # the splits differ
    again = ev.cross_validate(W, L, texts, ks=[40, 5, 10, 55], n_splits=4, seed=3, methods=["spy", "drift", "bt"])
    assert again == r
    first = [sorted(t) for t, _ in calls[:4]]
    calls.clear()
    ev.cross_validate(W, L, texts, ks=[5], n_splits=4, seed=3, methods=["spy"])
    assert [sorted(t) for t, _ in calls] == first  # a k's splits do not depend on the other ks
    calls.clear()
    ev.cross_validate(W, L, texts, ks=[5], n_splits=4, seed=4, methods=["spy"])
    assert [sorted(t) for t, _ in calls] != first  # another seed, other splits
    json.dumps(r)  # plain Python numbers


def test_cross_validate_with_groups_keeps_groups_on_one_side(monkeypatch):
    n = 48
    W, L = planted(seed=11, n=n)
    texts = [(f"c{i}", f"r{i}") for i in range(n)]
    groups = [f"q{i // 4}" for i in range(n)]  # 12 queries, 4 pairs each
    calls = spy(monkeypatch)
    r = ev.cross_validate(W, L, texts, ks=[4, 8, 40], n_splits=5, seed=0, methods=["spy"],
                          groups=groups, test_fraction=0.25, min_test=4)
    assert r["ks"] == [4, 8] and r["skipped_ks"] == [40]  # 9 training groups hold 36 pairs
    group_of = {f"c{i}": groups[i] for i in range(n)}
    for train, test in calls:
        assert len(test) == 12
        assert not {group_of[c] for c in train} & {group_of[c] for c in test}


def test_holdout_tests_on_the_whole_pool(monkeypatch):
    train = ev.Fold(texts=[(f"c{i}", f"r{i}") for i in range(30)])
    test = ev.Fold(texts=[(f"t{i}", f"u{i}") for i in range(7)])
    calls = spy(monkeypatch)
    r = ev.holdout(train, test, ks=[10, 30, 31], n_splits=3, seed=0, methods=["spy", "longer"])
    assert r["ks"] == [10, 30] and r["skipped_ks"] == [31]
    assert all(sorted(t) == sorted(f"t{i}" for i in range(7)) for _, t in calls)
    assert [len(tr) for tr, _ in calls] == [10, 10, 10, 30, 30, 30]
    assert r["methods"]["longer"]["std"] == [0.0, 0.0]


def test_unknown_method_and_missing_inputs():
    W, L = planted(n=20)
    with pytest.raises(DriftError, match="unknown evaluation method"):
        ev.cross_validate(W, L, None, ks=[5], methods=["nope"])
    with pytest.raises(DriftError, match="needs the response texts"):
        ev.cross_validate(W, L, None, ks=[5], methods=["longer"], min_test=1)
    with pytest.raises(DriftError, match="needs reward features"):
        ev.cross_validate(None, None, [("a", "b")] * 20, ks=[5], methods=["drift"], min_test=1)


def test_selection_average_and_table():
    W, L = planted(seed=12, n=80)
    rng = np.random.default_rng(12)
    texts = random_texts(rng, 80)
    a = ev.cross_validate(W, L, texts, ks=[5, 20], n_splits=3, seed=0, methods=["longer", "drift"])
    b = ev.cross_validate(W, L, texts, ks=[5, 20], n_splits=3, seed=1, methods=["longer", "drift"])
    assert ev.best_by_k(a) == ["drift", "drift"]
    avg = ev.average_results({"a": a, "b": b})
    expect = (np.array(a["methods"]["drift"]["scores"]) + np.array(b["methods"]["drift"]["scores"])) / 2
    assert avg["methods"]["drift"]["mean"] == pytest.approx(expect.mean(axis=1).tolist())
    table = ev.format_table(a, "title")
    assert "| method | k=5 | k=20 |" in table and "| drift |" in table and "| longer |" in table
    m = a["methods"]["drift"]
    assert f"{m['mean'][1]:.3f} ± {m['std'][1]:.3f}" in table


def test_plot_writes_png_and_explains_missing_matplotlib(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    W, L = planted(seed=13, n=60)
    r = ev.cross_validate(W, L, None, ks=[5, 10, 40], n_splits=2, seed=0, methods=["drift", "bt"])
    ev.plot(r, tmp_path / "one.png")
    ev.plot({"p1": r, "p2": r}, tmp_path / "two.png", title="t")
    ev.plot_bars({"p1": {"top 5": (0.7, 0.1), "top 10": (0.8, 0.05)}}, tmp_path / "bars.png")
    for name in ("one.png", "two.png", "bars.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(DriftError, match=r"matplotlib is not installed: pip install 'drift-cpp\[plot\]'"):
        ev.plot(r, tmp_path / "three.png")


# ------------------------------------------------------------ the experiment
def _cv_and_test(cv: dict, test: dict) -> dict:
    return {"cv": {"ks": [5], "methods": {label: {"mean": [x]} for label, x in cv.items()}},
            "test": {"ks": [5], "methods": {label: {"mean": [x]} for label, x in test.items()}}}


def test_default_fit_changes_only_when_cv_and_the_test_pools_agree():
    sys.path.insert(0, str(REPO / "experiments"))
    import dsp_fewshot

    grid = (1.0,)
    base = {label: 0.6 for label in dsp_fewshot.product_candidates(grid)}
    verdict = lambda cv, test: dsp_fewshot.defaults_evidence({"p": _cv_and_test(base | cv, base | test)}, grid)
    assert verdict({"bt l2=1": 0.7}, {"bt l2=1": 0.65})["adopt"] == "bt l2=1"
    assert verdict({"bt l2=1": 0.7}, {"bt l2=1": 0.55})["adopt"] == "drift"  # CV alone is not enough
    assert verdict({}, {"bt l2=1": 0.9})["adopt"] == "drift"  # the test pools never pick
    assert verdict({"drift (mean)": 0.61}, {"drift (mean)": 0.62})["adopt"] == "drift (mean)"


def test_dsp_fewshot_smoke_end_to_end(tmp_path, dsp):
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(REPO / "experiments" / "dsp_fewshot.py"), "--size", "smoke", "--data", str(dsp),
           "--threads", "1"]  # one thread: llama.cpp slows down badly when its threads share busy cores

    start = time.monotonic()
    run = subprocess.run(cmd + ["--out", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    first_s = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "accuracy_vs_k.png", "fit_methods.png", "normalization.png",
                 "attribute_reduction.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Cheng et al. 2023" in run.stdout

    results = json.loads((out / "results.json").read_text())
    for key in ("citation", "command", "git_rev", "model", "config", "split", "timing", "personas", "average"):
        assert key in results, key
    assert "CC BY-NC 4.0" in results["citation"]
    assert not set(results["split"]["train_queries"]) & set(results["split"]["test_queries"])
    assert results["config"]["size"] == "smoke" and len(results["config"]["attributes"]) == 8
    assert sorted(results["personas"]) == ["academy", "business", "entertainment", "literature"]
    for persona, r in results["personas"].items():
        for key in ("accuracy_vs_k", "fit_methods", "normalization", "attribute_reduction", "top_attributes",
                    "selection", "cv"):
            assert key in r, (persona, key)
        assert set(r["accuracy_vs_k"]["methods"]) == {"longer", "best_single", "bow_rm", "drift", "drift-selected"}
        assert set(r["fit_methods"]["methods"]) == {"qp", "logistic", "bt", "standardize", "with_length"}
        assert set(r["normalization"]["methods"]) >= {"qp sum", "qp mean"}
        assert r["accuracy_vs_k"]["ks"] == results["config"]["ks"]
        for table in ("accuracy_vs_k", "fit_methods", "normalization", "attribute_reduction"):
            for m in r[table]["methods"].values():
                assert np.array(m["scores"]).shape == (len(r[table]["ks"]), results["config"]["seeds"])
                assert all(0.0 <= x <= 1.0 for row in m["scores"] for x in row)
        assert len(r["top_attributes"]) == 5
        assert len(r["selection"]["drift-selected"]) == len(r["accuracy_vs_k"]["ks"])
    assert set(results["average"]) >= {"accuracy_vs_k", "fit_methods", "normalization", "attribute_reduction"}
    md = (out / "results.md").read_text()
    assert results["command"] in md and results["git_rev"] in md and "Cheng et al. 2023" in md
    assert "(accuracy_vs_k.png)" in md

    # The default fit changes only on train-pool CV evidence that holds on the test pools.
    d = results["defaults"]
    rows = {r["label"]: r for r in d["candidates"]}
    assert list(rows)[:2] == ["drift", "drift (mean)"] and "bt l2=1" in rows and "logistic l2=1" in rows
    assert d["best_by_cv"] == max(rows, key=lambda label: rows[label]["cv"])
    if d["adopt"] != "drift":
        assert d["adopt"] == d["best_by_cv"] and rows[d["adopt"]]["test"] > rows["drift"]["test"]
    assert f"Verdict: **{d['adopt']}**" in md

    # Resumable: a second run reads every score from the cache and gives the same numbers.
    start = time.monotonic()
    again = subprocess.run(cmd + ["--out", str(tmp_path / "out2"), "--img", str(tmp_path / "img")], env=env, capture_output=True, text=True,
                           timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert second["personas"]["academy"]["accuracy_vs_k"] == results["personas"]["academy"]["accuracy_vs_k"]
    assert second["average"] == results["average"]
    assert second["timing"]["scoring_s"] < results["timing"]["scoring_s"] / 3
    assert (tmp_path / "img" / "fit_methods.png").stat().st_size > 0
    assert "(../img/fit_methods.png)" in (tmp_path / "out2" / "results.md").read_text()
    assert time.monotonic() - start < first_s


def test_evaluate_command_reports_methods_by_k(tmp_path, dsp):
    # DSP (Cheng et al. 2023, CC BY-NC 4.0): the academy persona against entertainment answers.
    prefs = tmp_path / "prefs.jsonl"
    with prefs.open("w") as f:
        for line in dsp.read_text().splitlines()[:32]:
            r = json.loads(line)
            a, e = r["responses"]["academy"].strip(), r["responses"]["entertainment"].strip()
            if a and e and a != e:
                f.write(json.dumps({"id": r["id"], "prompt": r["query"], "chosen": a, "rejected": e}) + "\n")
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "evaluate", str(prefs),
                          "--include", "formal,humor", "--max-response-tokens", "16", "--splits", "3", "--json",
                          "--plot", str(tmp_path / "acc.png")], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ks"] == [10]
    assert set(out["methods"]) == {"drift-cpp (the profile's model)", "drift (bt l2=1000, the default)",
                                   "drift (qp, the paper's)", "longer",
                                   "best_single", "logistic", "bow_rm"}
    assert out["methods"]["drift (bt l2=1000, the default)"]["params"] == {"l2": 1000.0}
    assert all(0 <= m["mean"][0] <= 1 for m in out["methods"].values())
    assert (tmp_path / "acc.png").stat().st_size > 0
