"""Drift Approximation maths (no models)."""

import math

import numpy as np
import pytest

from drift_cpp.fit import approximation as ap
from drift_cpp.errors import DriftError


def planted(seed=0, n=40, k=6, margin=0.5):
    """Separable data along a planted direction: every chosen response scores >= margin
    along it and every rejected one <= -margin (so also every pair is ordered)."""
    rng = np.random.default_rng(seed)
    true = np.array([2.0, -1.5, 0.0, 1.0, 0.0, -0.5])[:k]
    true /= np.linalg.norm(true)
    W = rng.normal(size=(n, k))
    L = rng.normal(size=(n, k))
    W += np.maximum(margin - W @ true, 0.0)[:, None] * true
    L -= np.maximum(margin + L @ true, 0.0)[:, None] * true
    return W, L, true


def test_qp_matches_hand_computation():
    W = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]
    L = [[0.0, 1.0, 0.0], [0.5, 0.0, -2.0]]
    v, p = ap.fit_qp(W, L)
    # v = (1 + 0, -1 - 1, 2 + 2) = (1, -2, 4), ||v|| = sqrt(21)
    assert v.tolist() == [1.0, -2.0, 4.0]
    s = math.sqrt(21.0)
    assert p == pytest.approx([1 / s, -2 / s, 4 / s], abs=1e-15)


def test_qp_is_unit_norm_and_maximizes_objective():
    W, L, _ = planted(seed=3)
    v, p = ap.fit_qp(W, L)
    assert np.linalg.norm(p) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    for q in rng.normal(size=(200, W.shape[1])):
        q /= np.linalg.norm(q)
        assert v @ q <= v @ p + 1e-12


def test_zero_signal_gives_default_direction():
    W = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])
    v, p = ap.fit_qp(W, W.copy())
    assert not v.any()
    assert p.tolist() == [0.5, 0.5, 0.5, 0.5]
    assert ap.default_direction(4).tolist() == [0.5, 0.5, 0.5, 0.5]
    # no pairs at all: also the default
    assert ap.fit_qp(np.zeros((0, 4)), np.zeros((0, 4)))[1].tolist() == [0.5] * 4
    assert ap.fit(W, W, "bt").tolist() == pytest.approx([0.5] * 4)


def test_bad_inputs_are_drift_errors():
    with pytest.raises(DriftError, match="shape"):
        ap.fit_qp(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(DriftError, match="NaN"):
        ap.fit_qp([[np.nan]], [[0.0]])
    with pytest.raises(DriftError, match="unknown approximation method 'svm'"):
        ap.fit([[1.0]], [[0.0]], method="svm")
    with pytest.raises(DriftError, match="l2"):
        ap.fit_logistic([[1.0]], [[0.0]], l2=0.0)


def test_top_m_orders_by_magnitude_with_stable_ties():
    p = [0.1, -0.5, 0.5, 0.3, -0.3, 0.0]
    assert ap.top_m(p, 3).tolist() == [1, 2, 3]
    assert ap.top_m(p, 5).tolist() == [1, 2, 3, 4, 0]
    assert ap.top_m(p, 0).tolist() == []
    assert ap.top_m(p, 10).tolist() == [1, 2, 3, 4, 0, 5]


def test_top_m_skips_excluded():
    p = [0.1, -0.5, 0.5, 0.3, -0.3, 0.0]
    exclude = [False, True, False, False, True, False]
    assert ap.top_m(p, 3, exclude).tolist() == [2, 3, 0]
    assert ap.top_m(p, 10, exclude).tolist() == [2, 3, 0, 5]
    with pytest.raises(DriftError):
        ap.top_m(p, 2, [True])


@pytest.mark.parametrize("method", ["logistic", "bt"])
def test_regressions_recover_planted_direction(method):
    W, L, true = planted(seed=7)
    p = ap.fit(W, L, method)
    assert np.linalg.norm(p) == pytest.approx(1.0, abs=1e-12)
    big = np.abs(true) > 0.3
    assert (np.sign(p[big]) == np.sign(true[big])).all()
    assert p @ true > 0.8
    assert ap.accuracy(ap.predict(p, W, L)) == 1.0
    # deterministic: the same input gives the very same bits
    assert ap.fit(W, L, method).tobytes() == p.tobytes()


def test_bradley_terry_differs_from_logistic():
    # logistic sees absolute features; shifting every response by a constant vector
    # changes its fit but leaves the pairwise differences (and so BT and QP) unchanged.
    W, L, _ = planted(seed=11)
    shift = np.array([5.0, 0.0, -3.0, 0.0, 0.0, 2.0])
    assert ap.fit_bradley_terry(W + shift, L + shift) == pytest.approx(ap.fit_bradley_terry(W, L))
    assert ap.fit(W + shift, L + shift, "qp") == pytest.approx(ap.fit(W, L, "qp"))


def test_stronger_l2_moves_bt_towards_qp():
    # as l2 grows the Newton solution tends to (1/l2) * gradient at 0, i.e. along v
    W, L, _ = planted(seed=5)
    qp = ap.fit(W, L, "qp")
    assert ap.fit_bradley_terry(W, L, l2=1e6) == pytest.approx(qp, abs=1e-4)
    assert np.abs(ap.fit_bradley_terry(W, L, l2=0.01) - qp).max() > 1e-3


def test_predict_and_accuracy_with_ties():
    p = np.array([1.0, 0.0])
    Wc = np.array([[2.0, 0.0], [1.0, 5.0], [0.0, 0.0], [1.0, 1.0]])
    Lr = np.array([[1.0, 9.0], [1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    margins = ap.predict(p, Wc, Lr)
    assert margins.tolist() == [1.0, 0.0, -3.0, 1.0]
    assert ap.accuracy(margins) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert ap.accuracy([0.0, 0.0]) == 0.5
    with pytest.raises(DriftError):
        ap.accuracy([])


def test_unit_implicit_preference():
    assert ap.unit_implicit_preference(np.array([3.0, -6.0]), 3).tolist() == [1.0, -2.0]
    with pytest.raises(DriftError):
        ap.unit_implicit_preference(np.array([1.0]), 0)


def test_bradley_terry_with_an_offset_meets_its_optimality_condition():
    # The gradient of sum logloss(y, X b + offset) + l2/2 ||b||^2 vanishes at the returned b.
    rng = np.random.default_rng(5)
    D, offset, l2 = rng.normal(size=(30, 3)), rng.normal(size=30), 2.0
    b = ap.bradley_terry_coefficients(D, l2, offset=offset)
    X, z_off = np.vstack([D, -D]), np.concatenate([offset, -offset])
    y = np.concatenate([np.ones(30), np.zeros(30)])
    grad = X.T @ (1 / (1 + np.exp(-(X @ b + z_off))) - y) + l2 * b
    np.testing.assert_allclose(grad, 0, atol=1e-8)
    assert not np.allclose(b, ap.bradley_terry_coefficients(D, l2))  # the offset mattered
