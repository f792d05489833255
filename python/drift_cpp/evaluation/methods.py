"""The preference models compared by the evaluation, each fitted on a training fold and scored on a test fold.

A pair set is a `Fold`: the reward features W, L of shape (n_pairs, k) -- rewards of the chosen
and rejected responses under each attribute, already normalized ('sum' or 'mean') by the
caller -- and/or the texts (chosen, rejected) for the text baselines. Every method returns its
accuracy on the test fold (a margin of exactly 0 counts 0.5, as in approximation.accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ..fit import approximation
from ..fit.features import bow_design
from ..errors import DriftError


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Fold:
    """A set of preference pairs: reward features and/or texts, row j = pair j."""

    W: Optional[np.ndarray] = None                       # (n, k) rewards of the chosen responses
    L: Optional[np.ndarray] = None                       # (n, k) rewards of the rejected responses
    texts: Optional[Sequence[tuple[str, str]]] = None    # (chosen, rejected) strings
    groups: Optional[Sequence] = None                    # the prompt of each pair, for methods that group

    def __post_init__(self) -> None:
        n = None
        if (self.W is None) != (self.L is None):
            raise DriftError("a fold needs both W and L, or neither")
        if self.W is not None:
            W = np.asarray(self.W, dtype=np.float64)
            L = np.asarray(self.L, dtype=np.float64)
            if W.ndim != 2 or W.shape != L.shape:
                raise DriftError(f"W and L must have the same shape (pairs, attributes), got {W.shape} and {L.shape}")
            object.__setattr__(self, "W", W)
            object.__setattr__(self, "L", L)
            n = W.shape[0]
        if self.texts is not None:
            texts = [(str(c), str(r)) for c, r in self.texts]
            object.__setattr__(self, "texts", texts)
            if n is not None and len(texts) != n:
                raise DriftError(f"{len(texts)} text pairs for {n} feature rows")
            n = len(texts)
        if self.groups is not None and n is not None and len(self.groups) != n:
            raise DriftError(f"{len(self.groups)} groups for {n} pairs")
        if n is None:
            raise DriftError("a fold needs reward features (W, L) or texts")

    def __len__(self) -> int:
        return self.W.shape[0] if self.W is not None else len(self.texts)

    def take(self, idx) -> "Fold":
        idx = np.asarray(idx, dtype=np.int64)
        return Fold(
            W=None if self.W is None else self.W[idx],
            L=None if self.L is None else self.L[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            groups=None if self.groups is None else [self.groups[i] for i in idx],
        )

    def features(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        if self.W is None:
            raise DriftError(f"{what} needs reward features (W, L)")
        return self.W, self.L

    def text_pairs(self, what: str) -> list[tuple[str, str]]:
        if self.texts is None:
            raise DriftError(f"{what} needs the response texts")
        return self.texts


# ---------------------------------------------------------------------- baselines
def _accuracy(margins) -> float:
    return approximation.accuracy(margins)


def longer(train: Fold, test: Fold) -> float:
    """Always prefer the longer response (by characters). Nothing is fitted on `train`."""
    texts = test.text_pairs("longer")
    margins = np.array([len(c) - len(r) for c, r in texts], dtype=np.float64)
    return _accuracy(margins)


def best_single(train: Fold, test: Fold) -> float:
    """The attribute with the largest |sum_j (W_j - L_j)| on the training pairs, with its sign."""
    W, L = train.features("best_single")
    Wt, Lt = test.features("best_single")
    v = (W - L).sum(axis=0)
    i = int(np.argmax(np.abs(v)))  # first of equals
    sign = 1.0 if v[i] >= 0 else -1.0
    return _accuracy(sign * (Wt[:, i] - Lt[:, i]))


def _keep_top(p: np.ndarray, n_attributes: Optional[int]) -> np.ndarray:
    if n_attributes is None or n_attributes >= p.size:
        return p
    if n_attributes < 1:
        raise DriftError(f"n_attributes must be at least 1, got {n_attributes}")
    kept = np.zeros_like(p)
    idx = approximation.top_m(p, n_attributes)
    kept[idx] = p[idx]
    return kept


def drift(train: Fold, test: Fold, n_attributes: Optional[int] = None) -> float:
    """The paper's Drift Approximation (closed-form qp); only the top-m |p| kept if n_attributes=m."""
    W, L = train.features("drift")
    Wt, Lt = test.features("drift")
    p = _keep_top(approximation.fit(W, L, "qp"), n_attributes)
    return _accuracy(approximation.predict(p, Wt, Lt))


def logistic(train: Fold, test: Fold, l2: float = 1.0) -> float:
    """Logistic regression with absolute labels (approximation.fit_logistic)."""
    W, L = train.features("logistic")
    Wt, Lt = test.features("logistic")
    p = approximation.fit_logistic(W, L, l2=l2)
    return _accuracy(approximation.predict(p, Wt, Lt))


def bt(train: Fold, test: Fold, l2: float = 1.0) -> float:
    """Pairwise Bradley-Terry logistic regression on W - L (approximation.fit_bradley_terry)."""
    W, L = train.features("bt")
    Wt, Lt = test.features("bt")
    p = approximation.fit_bradley_terry(W, L, l2=l2)
    return _accuracy(approximation.predict(p, Wt, Lt))


def _scale(x: np.ndarray) -> np.ndarray:
    """Per-column standard deviation, 1 where it is zero or not finite."""
    sd = x.std(axis=0)
    return np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)


def standardize(train: Fold, test: Fold, n_attributes: Optional[int] = None) -> float:
    """Standardize each attribute with the mean and std of the 2k training responses, then qp."""
    W, L = train.features("standardize")
    Wt, Lt = test.features("standardize")
    both = np.vstack([W, L])
    mu, sd = both.mean(axis=0), _scale(both)
    p = _keep_top(approximation.fit((W - mu) / sd, (L - mu) / sd, "qp"), n_attributes)
    return _accuracy(approximation.predict(p, (Wt - mu) / sd, (Lt - mu) / sd))


def _lengths(texts: Sequence[tuple[str, str]]) -> np.ndarray:
    return np.array([[len(c), len(r)] for c, r in texts], dtype=np.float64)


def with_length(train: Fold, test: Fold, l2: float = 1.0) -> float:
    """bt on the attribute rewards plus the response length in characters as one more feature.

    The length column is divided by the std of the training responses' lengths so that its
    scale does not depend on the unit.
    """
    W, L = train.features("with_length")
    Wt, Lt = test.features("with_length")
    n, nt = _lengths(train.text_pairs("with_length")), _lengths(test.text_pairs("with_length"))
    s = float(_scale(n.reshape(-1, 1))[0])
    p = approximation.fit_bradley_terry(np.hstack([W, n[:, :1] / s]), np.hstack([L, n[:, 1:] / s]), l2=l2)
    return _accuracy(approximation.predict(p, np.hstack([Wt, nt[:, :1] / s]), np.hstack([Lt, nt[:, 1:] / s])))


# ---------------------------------------------------------------- bag-of-words RM

def bow_rm(train: Fold, test: Fold, l2: float = 1.0) -> float:
    """Bradley-Terry logistic regression on tfidf(chosen) - tfidf(rejected), l2-penalized.

    The vocabulary and idf come from the training pairs' responses only (unigrams, sublinear
    tf, smoothed idf, l2-normalized rows). The fit is approximation.fit_bradley_terry (damped
    Newton), run exactly in the <= k-dimensional row space of the training differences.
    """
    Z, Zt = bow_design(train.text_pairs("bow_rm"), test.text_pairs("bow_rm"))
    if Z.shape[1] == 0:  # no word tells the two responses apart in any training pair
        return _accuracy(np.zeros(Zt.shape[0]))
    c = approximation.fit_bradley_terry(Z, np.zeros_like(Z), l2=l2)
    return _accuracy(Zt @ c)


def chosen(train: Fold, test: Fold) -> float:
    """drift-cpp's per-user model (choice.choose) on the training pairs, with its defaults."""
    from ..fit import choice  # choice reads this module's tfidf features

    W, L = train.features("chosen")
    Wt, Lt = test.features("chosen")
    model = choice.choose(W, L, train.text_pairs("chosen"), groups=train.groups).model
    return _accuracy(choice.margins(model, Wt, Lt, test.text_pairs("chosen")))


BASELINES: dict[str, Callable[..., float]] = {
    "longer": longer,
    "best_single": best_single,
    "drift": drift,
    "logistic": logistic,
    "bt": bt,
    "bow_rm": bow_rm,
    "standardize": standardize,
    "with_length": with_length,
    "chosen": chosen,
}

MethodSpec = Union[str, tuple[str, Mapping[str, Any]]]


def resolve_methods(methods: Union[Sequence[str], Mapping[str, MethodSpec]]) -> dict[str, tuple[str, dict]]:
    """Label -> (baseline name, params). `methods` is a list of names, or a mapping from a
    label to a name or a (name, params) pair, e.g. {"bt l2=0.1": ("bt", {"l2": 0.1})}."""
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Mapping):
        methods = {m: m for m in methods}
    resolved = {}
    for label, spec in methods.items():
        name, params = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        if name not in BASELINES:
            raise DriftError(f"unknown evaluation method {name!r} (choose one of: {', '.join(BASELINES)})")
        resolved[str(label)] = (name, params)
    if not resolved:
        raise DriftError("no evaluation methods given")
    return resolved


def evaluate(method: MethodSpec, train: Fold, test: Fold) -> float:
    """Accuracy on `test` of one method fitted on `train`."""
    (name, params), = resolve_methods({"m": method}).values()
    return BASELINES[name](train, test, **params)
