"""Drift Approximation end to end on real models."""

import json
import subprocess
import sys

import numpy as np
import pytest

from drift_cpp.score.attributes import Attribute, builtin_attributes
from drift_cpp.errors import DriftError
from drift_cpp.preferences import load_pairs, write_pairs
from drift_cpp.fit.profile import FitOptions, Profile, reward_features
from drift_cpp.score.scorer import ScoreRequest, Scorer

ATTRS = ("concise", "formal", "humor", "analytic", "storyteller", "exclamatory")


@pytest.fixture(scope="module")
def demo_pairs():
    from drift_cpp.demo import DEMO_PAIRS
    return load_pairs(DEMO_PAIRS)[:6]


@pytest.fixture(scope="module")
def scorer(smollm):
    return Scorer(smollm, progress=False)


def test_w_and_l_equal_direct_scorer_differences(scorer, demo_pairs):
    attrs = builtin_attributes().select(ATTRS)
    W, L = reward_features(scorer, demo_pairs[:2], attrs.base, attrs.attributes)
    for j, pair in enumerate(demo_pairs[:2]):
        for i, a in enumerate(attrs.attributes):
            for response, M in ((pair.chosen, W), (pair.rejected, L)):
                lp = [scorer.score([ScoreRequest(s, pair.prompt, response)]).logprob[0]
                      for s in (a.prompt, attrs.base.prompt)]
                assert M[j, i] == pytest.approx(lp[0] - lp[1], abs=1e-9)


def test_qp_fit_is_the_closed_form_with_top_m(scorer, demo_pairs):
    # exhaustive: with top 3 of 6 attributes screening would leave entries unscored (test_screening.py)
    prof = Profile.fit(demo_pairs, scorer, builtin_attributes().select(ATTRS), FitOptions(top=3, method="qp"),
                       screen=None)
    p = prof.p
    assert np.linalg.norm(p) == pytest.approx(1.0)
    W, L = prof.W, prof.L
    v = (W - L).sum(axis=0)
    np.testing.assert_allclose(p, v / np.linalg.norm(v))
    ids = list(prof.attributes.ids)
    assert prof.selected == [ids[i] for i in np.argsort(-np.abs(v), kind="stable")[:3]]
    # the demo persona wants short answers: "concise" is its strongest positive attribute
    assert prof.selected[0] == "concise" and p[ids.index("concise")] > 0


def test_default_fit_is_regularized_bradley_terry(scorer, demo_pairs):
    # The default chosen by the DSP evaluation: bt with l2 = 1000, between the closed form and
    # an unregularized fit. Reference: the penalized BT objective (each pair enters as D_j labelled 1
    # and -D_j labelled 0) is stationary at the optimum b, so its gradient
    # -2 sum_j (1 - sigmoid(D_j b)) D_j + l2 b vanishes; p = b / ||b||.
    prof = Profile.fit(demo_pairs, scorer, builtin_attributes().select(ATTRS), FitOptions(top=3), screen=None)
    assert (prof.options.method, prof.options.l2) == ("bt", 1000.0)
    assert prof.options.l2 == 1000.0
    W, L = prof.W, prof.L
    D = W - L
    p = prof.p
    # b = s * p for the unknown norm s: solve the one-dimensional stationarity along p, then check all of it
    def grad(s):
        b = s * p
        return -2.0 * (D.T @ (1.0 - 1.0 / (1.0 + np.exp(-(D @ b))))) + 1000.0 * b
    lo, hi = 0.0, 10.0
    for _ in range(200):  # bisection on grad(s) . p, increasing in s
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if grad(mid) @ p < 0 else (lo, mid)
    np.testing.assert_allclose(grad(lo), 0.0, atol=1e-6)
    assert np.linalg.norm(p) == pytest.approx(1.0)


def test_incremental_update_and_new_attribute_equal_full_fit(scorer, demo_pairs, tmp_path):
    attrs = builtin_attributes().select(ATTRS)
    full = Profile.fit(demo_pairs, scorer, attrs)
    part = Profile.fit(demo_pairs[:3], scorer, attrs)
    assert part.update(demo_pairs, scorer) == 3
    np.testing.assert_allclose(part.p, full.p)
    assert part.pair_ids == full.pair_ids

    fewer = Profile.fit(demo_pairs, scorer, attrs.select(exclude=["exclamatory"]))
    fewer.add_attributes([attrs.get("exclamatory")], demo_pairs, scorer)
    assert list(fewer.attributes.ids) == list(full.attributes.ids)[:4] + \
        ["storyteller", "exclamatory"]
    np.testing.assert_allclose(fewer.p, full.p)


def test_profile_from_other_model_is_refused(scorer, gemma, demo_pairs):
    prof = Profile.fit(demo_pairs[:2], scorer, builtin_attributes().select(ATTRS[:2]))
    with pytest.raises(DriftError, match="cannot be used with gemma"):
        prof.check_model(gemma)


def test_cli_round_trip_show_update_predict(demo_pairs, tmp_path):
    prefs, more, out = tmp_path / "prefs.jsonl", tmp_path / "more.jsonl", tmp_path / "p.json"
    write_pairs(prefs, demo_pairs[:3])
    write_pairs(more, demo_pairs)
    cli = [sys.executable, "-m", "drift_cpp.cli"]
    run = lambda *a: subprocess.run(cli + list(a), capture_output=True, text=True)  # noqa: E731
    r = run("approximate", str(prefs), "-o", str(out), "--include", ",".join(ATTRS), "--top", "2",
            "--decode-exclude", "humor")
    assert r.returncode == 0, r.stderr
    saved = json.loads(out.read_text())
    assert saved["n_pairs"] == 3 and "humor" not in saved["selected"] and len(saved["selected"]) == 2
    shown = json.loads(run("profile", "show", str(out), "--json").stdout)
    assert sorted(a["id"] for a in shown["attributes"]) == sorted(ATTRS)
    assert "x approximated" in run("profile", "show", str(out)).stdout
    r = run("profile", "update", str(out), str(more))
    assert r.returncode == 0 and "added 3 new pairs" in r.stdout
    pred = json.loads(run("predict", str(out), str(more), "--json").stdout)
    assert len(pred["pairs"]) == 6 and 0 <= pred["accuracy"] <= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "rejected": "b"}\n')
    r = run("approximate", str(bad), "-o", str(tmp_path / "never.json"))
    assert r.returncode == 1 and r.stderr.strip() == f"error: {bad}:2: missing field 'chosen'"
    assert not (tmp_path / "never.json").exists()


def test_dsp_academy_profile_beats_chance_on_held_out_pairs(smollm, tmp_cache, dsp):
    # DSP: Cheng et al. 2023, "Everyone Deserves A Reward" (CC BY-NC 4.0). Persona "academy" prefers
    # its own style over "entertainment".
    from drift_cpp.preferences import Message, PreferencePair
    rows = [json.loads(line) for line in open(dsp)][:40]
    pairs = [PreferencePair((Message("user", r["query"]),), r["responses"]["academy"],
                            r["responses"]["entertainment"], r["id"], i + 1)
             for i, r in enumerate(rows) if r["responses"]["academy"] and r["responses"]["entertainment"]]
    scorer = Scorer(smollm, max_response_tokens=48, progress=False)
    attrs = builtin_attributes().select(("formal", "analytic", "humor", "energy", "exclamatory", "creative"))
    prof = Profile.fit(pairs[:20], scorer, attrs)
    margins = prof.predict(pairs[20:40], scorer)
    assert (margins > 0).mean() > 0.5
    top = prof.selected[0]
    sign = prof.p[attrs.ids.index(top)]
    assert (top, sign > 0) in {("formal", True), ("analytic", True), ("humor", False), ("energy", False),
                               ("exclamatory", False), ("creative", False)}
