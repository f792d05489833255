"""Drift Approximation (paper section 3.1): attribute weights p from preference pairs.

Pure numpy. The caller has already computed the reward features of every pair:

    W[j, i] = log pi(y_w | x, s_i) - log pi(y_w | x, s_0)   (chosen response of pair j)
    L[j, i] = the same for the rejected response

both of shape (n_pairs, k), already normalized per token ('sum' or 'mean') by the caller.

The paper's method ("qp") maximizes (W - L)^T p on the unit l2 sphere (eq. 6), whose
closed form is p = v / ||v||_2 with v = sum_j (W_j - L_j). Section 5 compares it with
logistic regression on absolute labels ("logistic"); "bt" is an l2-regularized pairwise
Bradley-Terry fit. As l2 grows, both regressions tend to the closed form (their gradient at
zero lies along v), so a strong l2 starts from the paper's answer and lets many pairs move it.

The default is bt with l2 = 1000: on DSP it beat the closed form in cross-validation on the
train pools and on the held-out test pools (docs/results.md, "Defaults by evidence").
"""

from __future__ import annotations

import numpy as np

from ..errors import DriftError
from ..params import DEFAULT_L2, DEFAULT_METHOD

METHODS = ("qp", "logistic", "bt")

# Below this l2 norm a weight vector counts as zero (v = 0 in the paper).
ZERO_TOL = 1e-12

# When v = 0 every unit vector attains the same objective (W - L)^T p = 0, so any one is
# optimal. Drift uses a fixed default; the uniform direction p_i = 1/sqrt(k) is the one
# that favours no attribute over another.
DEFAULT_DIRECTION = "uniform"


def default_direction(k: int) -> np.ndarray:
    """The fixed default p used when there is no signal: uniform, p_i = 1/sqrt(k)."""
    if k < 1:
        raise DriftError("no attributes: at least one is needed")
    return np.full(k, 1.0 / np.sqrt(k))


def normalize(v) -> np.ndarray:
    """v / ||v||_2, or the default direction when ||v||_2 is (numerically) zero."""
    v = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(v)
    if not np.isfinite(norm):
        raise DriftError("attribute weights are not finite")
    if norm <= ZERO_TOL:
        return default_direction(v.size)
    return v / norm


def _check_pairs(W, L) -> tuple[np.ndarray, np.ndarray]:
    W = np.asarray(W, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    if W.ndim != 2 or W.shape != L.shape:
        raise DriftError(
            f"reward features must be two arrays of shape (pairs, attributes), got {W.shape} and {L.shape}"
        )
    if W.shape[1] < 1:
        raise DriftError("no attributes: at least one is needed")
    if not (np.isfinite(W).all() and np.isfinite(L).all()):
        raise DriftError("reward features contain NaN or infinite values")
    return W, L


def fit_qp(W, L) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form Drift Approximation (eq. 6): v = sum_j (W_j - L_j), p = v / ||v||_2.

    Returns (v, p). With v = 0 (or no pairs) p is the default direction.
    """
    W, L = _check_pairs(W, L)
    v = (W - L).sum(axis=0)
    return v, normalize(v)


def _newton_logistic(X, y, l2, penalized, iters, tol=1e-10, offset=None) -> np.ndarray:
    """Minimize sum_r logloss(y_r, X_r b + offset_r) + l2/2 * ||b[penalized]||^2 by damped Newton.

    Deterministic: starts at b = 0, full Newton steps halved until the objective decreases.
    """
    if not l2 > 0:
        raise DriftError(f"l2 penalty must be positive, got {l2}")
    n, d = X.shape
    pen = l2 * penalized.astype(np.float64)
    offset = np.zeros(n) if offset is None else offset

    def objective(b):
        z = X @ b + offset
        # logloss = log(1 + e^z) - y z, computed stably
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(pen * b * b))

    b = np.zeros(d)
    f = objective(b)
    for _ in range(iters):
        z = X @ b + offset
        mu = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, overflow-free
        grad = X.T @ (mu - y) + pen * b
        hess = (X.T * (mu * (1.0 - mu))) @ X + np.diag(pen) + 1e-12 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10:
            f_new = objective(b - t * step)
            if f_new <= f:
                break
            t *= 0.5
        else:
            break  # no decrease possible: at the optimum up to rounding
        b, f = b - t * step, f_new
        if np.max(np.abs(t * step)) < tol:
            break
    return b


def fit_logistic(W, L, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """Section 5 alternative: logistic regression with absolute labels.

    Rows are the 2n responses: chosen features W_j labelled 1, rejected L_j labelled 0.
    The model has an unpenalized intercept; coefficients carry an l2/2 * ||b||^2 penalty
    (added to the summed, not averaged, log loss). Returns the coefficients at unit l2 norm.
    """
    W, L = _check_pairs(W, L)
    n, k = W.shape
    X = np.vstack([W, L])
    X = np.hstack([X, np.ones((2 * n, 1))])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    penalized = np.array([True] * k + [False])
    b = _newton_logistic(X, y, l2, penalized, iters)
    return normalize(b[:k])


def fit_bradley_terry(W, L, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """L2-regularized pairwise (Bradley-Terry) logistic regression on D = W - L.

    No intercept. Every row D_j is labelled 1; the mirrored rows -D_j are added with
    label 0 so both classes are present. Returns the coefficients at unit l2 norm.
    """
    W, L = _check_pairs(W, L)
    return normalize(bradley_terry_coefficients(W - L, l2, iters))


def bradley_terry_coefficients(D, l2: float = 1.0, iters: int = 100, offset=None) -> np.ndarray:
    """The coefficients b of fit_bradley_terry on differences D = W - L, as fitted (not at unit norm):
    P(chosen) = sigmoid(D_j . b + offset_j). A model over several feature families needs their
    relative scale; the offset is the margin its priors' means give (zero-mean priors: none)."""
    D = np.asarray(D, dtype=np.float64)
    n, k = D.shape
    X = np.vstack([D, -D])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    offset = None if offset is None else np.concatenate([offset, -np.asarray(offset, dtype=np.float64)])
    return _newton_logistic(X, y, l2, np.ones(k, dtype=bool), iters, offset=offset)


def fit(W, L, method: str = DEFAULT_METHOD, l2: float = DEFAULT_L2) -> np.ndarray:
    """Attribute weights p (unit l2 norm) by `method`: "qp" (the paper's; l2 unused), "logistic" or "bt"."""
    if method == "qp":
        return fit_qp(W, L)[1]
    if method == "logistic":
        return fit_logistic(W, L, l2=l2)
    if method == "bt":
        return fit_bradley_terry(W, L, l2=l2)
    raise DriftError(f"unknown approximation method {method!r} (choose one of: {', '.join(METHODS)})")


def top_m(p, m: int, exclude_mask=None) -> np.ndarray:
    """Indices of the m largest |p_i|, largest first, ties broken by lower index.

    Attributes where exclude_mask is True are skipped; fewer than m indices come back
    when fewer are available.
    """
    p = np.asarray(p, dtype=np.float64)
    if m < 0:
        raise DriftError(f"number of attributes to select must be >= 0, got {m}")
    order = np.argsort(-np.abs(p), kind="stable")
    if exclude_mask is not None:
        exclude_mask = np.asarray(exclude_mask, dtype=bool)
        if exclude_mask.shape != p.shape:
            raise DriftError(f"exclude mask has shape {exclude_mask.shape}, weights have {p.shape}")
        order = order[~exclude_mask[order]]
    return order[:m]


def predict(p, features_chosen, features_rejected) -> np.ndarray:
    """Preference margins (Wc - Lr) . p, one per pair; > 0 means the chosen one is predicted."""
    diff = np.asarray(features_chosen, dtype=np.float64) - np.asarray(features_rejected, dtype=np.float64)
    return diff @ np.asarray(p, dtype=np.float64)


def accuracy(margins) -> float:
    """Fraction of pairs predicted correctly: margin > 0 counts 1, a tie (== 0) counts 0.5."""
    margins = np.asarray(margins, dtype=np.float64).ravel()
    if margins.size == 0:
        raise DriftError("no pairs to evaluate")
    return float(np.mean((margins > 0) + 0.5 * (margins == 0)))


def unit_implicit_preference(v, n_pairs: int) -> np.ndarray:
    """Per-attribute mean of W - L over the pairs (section 4.2, 'unit implicit preference')."""
    if n_pairs < 1:
        raise DriftError("no pairs: the unit implicit preference needs at least one")
    return np.asarray(v, dtype=np.float64) / n_pairs
