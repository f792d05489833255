"""Few-shot preference-modelling evaluation (paper section 4.2 and section 5).

Pure functions over numpy arrays (matplotlib only for the plots, imported lazily). A pair
set is a `Fold`: the reward features W, L of shape (n_pairs, k) -- rewards of the chosen
and rejected responses under each attribute, already normalized ('sum' or 'mean') by the
caller -- and/or the texts (chosen, rejected) for the text baselines.

Every method is fitted on the training fold and returns its accuracy on the test fold
(a margin of exactly 0 counts 0.5, as in approximation.accuracy):

    longer       always prefer the longer response (characters); nothing is fitted
    best_single  the one attribute whose training column sum of W - L has the largest |value|,
                 used with its sign
    drift        the paper's closed form (approximation.fit, method "qp"); with n_attributes=m
                 only the top-m |p| weights are kept (paper Figure 4)
    logistic     approximation.fit_logistic (absolute labels, section 5)
    bt           approximation.fit_bradley_terry (pairwise)
    standardize  per-attribute standardization with training statistics, then qp
    with_length  response length as one more feature, bt fit
    bow_rm       a conventional learned reward model sized for a laptop: Bradley-Terry
                 logistic regression on TF-IDF features of the response text

cross_validate draws random train/test splits of one pair set; holdout samples training
sets from a train pool and always tests on a fixed, disjoint test pool. Both use fixed
seeds, so the same arguments give the same numbers, and all methods see the same splits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from . import approximation
from .errors import DriftError
from .fileio import save_figure

DEFAULT_SEED = 0
MIN_TEST = 10  # fewest held-out pairs a split may have (cross_validate without groups)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Fold:
    """A set of preference pairs: reward features and/or texts, row j = pair j."""

    W: Optional[np.ndarray] = None                       # (n, k) rewards of the chosen responses
    L: Optional[np.ndarray] = None                       # (n, k) rewards of the rejected responses
    texts: Optional[Sequence[tuple[str, str]]] = None    # (chosen, rejected) strings

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
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@lru_cache(maxsize=1 << 16)
def _term_counts(text: str) -> tuple[tuple[str, int], ...]:
    return tuple(Counter(_WORD.findall(text.lower())).items())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with an apostrophe suffix like "don't")."""
    return _WORD.findall(text.lower())


def tfidf_fit(docs: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary (term -> column) and smoothed idf = ln((1 + N) / (1 + df)) + 1 of `docs`."""
    df: Counter = Counter()
    for d in docs:
        df.update(t for t, _ in _term_counts(d))
    vocab = {t: i for i, t in enumerate(sorted(df))}
    N = len(docs)
    idf = np.array([math.log((1 + N) / (1 + df[t])) + 1.0 for t in sorted(df)], dtype=np.float64)
    return vocab, idf


def tfidf_transform(docs: Sequence[str], vocab: Mapping[str, int], idf: np.ndarray) -> np.ndarray:
    """Rows: sublinear tf (1 + ln count) times idf, l2-normalized; terms outside the vocabulary dropped."""
    X = np.zeros((len(docs), len(vocab)), dtype=np.float64)
    for r, d in enumerate(docs):
        for t, c in _term_counts(d):
            j = vocab.get(t)
            if j is not None:
                X[r, j] = 1.0 + math.log(c)
    X *= idf
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


@lru_cache(maxsize=4)
def _bow_design(train_texts: tuple, test_texts: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Zt): training and test tfidf differences in the row space of the training ones.

    With X = tfidf(chosen) - tfidf(rejected) of the training pairs and X = U S V^T, an
    l2-penalized linear model b always lies in span(V), so b = V c and X b = (U S) c, with
    ||b|| = ||c||. U S and S come from the k x k Gram matrix X X^T (no vocabulary-sized SVD),
    and the test rows map to Xt V = (Xt X^T) U S^-1. Cached: successive methods (e.g. an l2
    grid) on the same split share the features.
    """
    vocab, idf = tfidf_fit([t for pair in train_texts for t in pair])
    X = tfidf_transform([c for c, _ in train_texts], vocab, idf) - tfidf_transform([r for _, r in train_texts], vocab, idf)
    Xt = (tfidf_transform([c for c, _ in test_texts], vocab, idf)
          - tfidf_transform([r for _, r in test_texts], vocab, idf))
    lam, U = np.linalg.eigh(X @ X.T)
    keep = lam > 1e-10 * max(float(lam.max(initial=0.0)), 1e-300)
    s = np.sqrt(lam[keep])
    U = U[:, keep]
    return U * s, (Xt @ X.T) @ (U / s)


def bow_rm(train: Fold, test: Fold, l2: float = 1.0) -> float:
    """Bradley-Terry logistic regression on tfidf(chosen) - tfidf(rejected), l2-penalized.

    The vocabulary and idf come from the training pairs' responses only (unigrams, sublinear
    tf, smoothed idf, l2-normalized rows). The fit is approximation.fit_bradley_terry (damped
    Newton), run exactly in the <= k-dimensional row space of the training differences.
    """
    Z, Zt = _bow_design(tuple(train.text_pairs("bow_rm")), tuple(test.text_pairs("bow_rm")))
    if Z.shape[1] == 0:  # no word tells the two responses apart in any training pair
        return _accuracy(np.zeros(Zt.shape[0]))
    c = approximation.fit_bradley_terry(Z, np.zeros_like(Z), l2=l2)
    return _accuracy(Zt @ c)


BASELINES: dict[str, Callable[..., float]] = {
    "longer": longer,
    "best_single": best_single,
    "drift": drift,
    "logistic": logistic,
    "bt": bt,
    "bow_rm": bow_rm,
    "standardize": standardize,
    "with_length": with_length,
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


# -------------------------------------------------------------- split protocols
def _summary(ks, scores: dict[str, list[list[float]]], resolved, extra: dict) -> dict:
    out = dict(extra)
    out["ks"] = [int(k) for k in ks]
    out["methods"] = {}
    for label, (name, params) in resolved.items():
        rows = [np.asarray(s, dtype=np.float64) for s in scores[label]]
        out["methods"][label] = {
            "method": name,
            "params": params,
            "mean": [float(r.mean()) for r in rows],
            "std": [float(r.std()) for r in rows],
            "scores": [[float(x) for x in r] for r in rows],
        }
    return out


def _check_ks(ks) -> list[int]:
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise DriftError(f"training sizes must be at least 1, got {ks}")
    return sorted(dict.fromkeys(ks))


def group_partition(groups, n_splits: int, seed: int = DEFAULT_SEED,
                    test_fraction: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each split, (candidate training pairs, test pairs): a random `test_fraction` of the
    groups (at least one) holds the test pairs, the other groups the training candidates."""
    groups = np.asarray(groups)
    labels = np.unique(groups)
    if labels.size < 2:
        raise DriftError("grouped splits need at least two groups")
    if not 0 < test_fraction < 1:
        raise DriftError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    n_test = min(max(1, int(round(test_fraction * labels.size))), labels.size - 1)
    parts = []
    for s in range(n_splits):
        rng = np.random.default_rng([seed, s])
        test_groups = rng.permutation(labels)[:n_test]
        is_test = np.isin(groups, test_groups)
        parts.append((np.flatnonzero(~is_test), np.flatnonzero(is_test)))
    return parts


def cross_validate(W, L, texts, ks: Sequence[int], n_splits: int = 10, seed: int = DEFAULT_SEED,
                   methods: Union[Sequence[str], Mapping[str, MethodSpec]] = ("drift",),
                   groups=None, test_fraction: float = 0.5, min_test: int = MIN_TEST) -> dict:
    """Accuracy vs training size k over random splits of one set of pairs.

    For each k, n_splits random splits: k training pairs, the rest held out. With `groups`
    (e.g. the query of each pair), a split first holds out a random `test_fraction` of the
    groups, and the k training pairs are drawn from the other groups, so no group is on both
    sides. A k is skipped (listed in "skipped_ks") when a split could not leave `min_test`
    held-out pairs or, with groups, has fewer than k candidates. W/L or texts may be None
    when no method needs them. Returns {"ks", "skipped_ks", "n_pairs", "n_splits", "seed",
    "methods": {label: {"method", "params", "mean", "std", "scores"}}}, the lists by k.
    """
    fold = Fold(W=W, L=L, texts=texts)
    n = len(fold)
    resolved = resolve_methods(methods)
    if n_splits < 1:
        raise DriftError("n_splits must be at least 1")
    ks = _check_ks(ks)
    if groups is not None:
        if len(groups) != n:
            raise DriftError(f"{len(groups)} groups for {n} pairs")
        parts = group_partition(groups, n_splits, seed, test_fraction)
        fits = [k for k in ks if all(k <= len(c) and len(t) >= min_test for c, t in parts)]
    else:
        fits = [k for k in ks if k <= n - min_test]
    scores = {label: [] for label in resolved}
    for k in fits:
        per = {label: [] for label in resolved}
        for s in range(n_splits):
            rng = np.random.default_rng([seed, s, k])
            if groups is not None:
                candidates, test_idx = parts[s]
                train_idx = rng.choice(candidates, size=k, replace=False)
            else:
                perm = rng.permutation(n)
                train_idx, test_idx = perm[:k], perm[k:]
            train, test = fold.take(train_idx), fold.take(test_idx)
            for label, (name, params) in resolved.items():
                per[label].append(BASELINES[name](train, test, **params))
        for label in resolved:
            scores[label].append(per[label])
    return _summary(fits, scores, resolved, {
        "protocol": "cross_validate", "n_pairs": n, "n_splits": n_splits, "seed": seed,
        "grouped": groups is not None, "skipped_ks": [k for k in ks if k not in fits]})


def holdout(train: Fold, test: Fold, ks: Sequence[int], n_splits: int = 10, seed: int = DEFAULT_SEED,
            methods: Union[Sequence[str], Mapping[str, MethodSpec]] = ("drift",)) -> dict:
    """Accuracy vs k with a fixed test pool: for each k, n_splits random draws of k training
    pairs from the `train` pool, each evaluated on the whole `test` pool. ks larger than the
    train pool are skipped. Same result layout as cross_validate."""
    resolved = resolve_methods(methods)
    if n_splits < 1:
        raise DriftError("n_splits must be at least 1")
    if len(test) < 1:
        raise DriftError("the test pool is empty")
    ks = _check_ks(ks)
    fits = [k for k in ks if k <= len(train)]
    scores = {label: [] for label in resolved}
    for k in fits:
        per = {label: [] for label in resolved}
        for s in range(n_splits):
            rng = np.random.default_rng([seed, s, k])
            sample = train.take(rng.choice(len(train), size=k, replace=False))
            for label, (name, params) in resolved.items():
                per[label].append(BASELINES[name](sample, test, **params))
        for label in resolved:
            scores[label].append(per[label])
    return _summary(fits, scores, resolved, {
        "protocol": "holdout", "n_train": len(train), "n_test": len(test), "n_splits": n_splits,
        "seed": seed, "skipped_ks": [k for k in ks if k not in fits]})


def best_by_k(results: dict, labels: Optional[Sequence[str]] = None) -> list[str]:
    """For each k of `results`, the label with the highest mean accuracy (first of equals)."""
    labels = list(labels) if labels is not None else list(results["methods"])
    missing = [l for l in labels if l not in results["methods"]]
    if missing:
        raise DriftError(f"no results for: {', '.join(missing)}")
    best = []
    for i in range(len(results["ks"])):
        means = [results["methods"][l]["mean"][i] for l in labels]
        best.append(labels[int(np.argmax(means))])
    return best


def average_results(per_group: Mapping[str, dict]) -> dict:
    """Average over groups (e.g. personas) of results with the same ks, methods and n_splits:
    split s of the average is the mean over groups of their split s."""
    items = list(per_group.values())
    if not items:
        raise DriftError("nothing to average")
    ks = items[0]["ks"]
    labels = list(items[0]["methods"])
    for r in items[1:]:
        if r["ks"] != ks or list(r["methods"]) != labels:
            raise DriftError("results to average differ in their ks or methods")
    out = {"protocol": "average", "over": list(per_group), "ks": list(ks), "methods": {}}
    for label in labels:
        stacked = np.array([r["methods"][label]["scores"] for r in items], dtype=np.float64)
        mean_scores = stacked.mean(axis=0)  # (n_ks, n_splits)
        first = items[0]["methods"][label]
        out["methods"][label] = {
            "method": first["method"], "params": first["params"],
            "mean": [float(x) for x in mean_scores.mean(axis=1)],
            "std": [float(x) for x in mean_scores.std(axis=1)],
            "scores": mean_scores.tolist(),
        }
    return out


# ------------------------------------------------------------------- reporting
def format_table(results: dict, title: Optional[str] = None, digits: int = 3) -> str:
    """A markdown table: one row per method, one column per k, cells 'mean ± std'."""
    ks = results["ks"]
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    if not ks:
        skipped = results.get("skipped_ks", [])
        return "\n".join(lines + [f"(no training size fits; skipped k = {skipped})"]) + "\n"
    lines.append("| method | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|" + "---|" * len(ks))
    for label, r in results["methods"].items():
        cells = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(r["mean"], r["std"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(n_panels: int, ncols: int = 3, size=(4.2, 3.3)):
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise DriftError("matplotlib is not installed: pip install 'drift-cpp[plot]'") from None
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _panels(results) -> dict[str, dict]:
    if isinstance(results, Mapping) and "methods" in results and "ks" in results:
        return {"": results}
    return dict(results)


def plot(results, path, title: Optional[str] = None, methods: Optional[Sequence[str]] = None) -> None:
    """Accuracy vs number of training pairs (paper Figure 3): mean with a ±1 std band.

    `results` is one result dict or a mapping panel title -> result dict (one panel each).
    """
    panels = _panels(results)
    fig, axes = _figure(len(panels))
    for ax, (name, r) in zip(axes, panels.items()):
        for label, m in r["methods"].items():
            if methods is not None and label not in methods:
                continue
            if not r["ks"]:
                continue
            mean, std = np.array(m["mean"]), np.array(m["std"])
            line, = ax.plot(r["ks"], mean, marker="o", markersize=3, label=label)
            ax.fill_between(r["ks"], mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        if len(r["ks"]) > 1 and max(r["ks"]) / max(min(r["ks"]), 1) >= 8:
            ax.set_xscale("log")
            ax.set_xticks(r["ks"], [str(k) for k in r["ks"]])
            ax.minorticks_off()
        ax.set_xlabel("training pairs (k)")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=110)


def plot_bars(values: Mapping[str, Mapping[str, tuple[float, float]]], path, title: Optional[str] = None,
              ylabel: str = "test accuracy") -> None:
    """Grouped bars (paper Figure 4): values[group][bar] = (mean, std)."""
    groups = list(values)
    bars = list(dict.fromkeys(b for g in groups for b in values[g]))
    fig, (ax,) = _figure(1, size=(max(6.0, 1.1 * len(groups) * max(len(bars), 1) * 0.35 + 2), 3.6))
    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(groups))
    for i, b in enumerate(bars):
        means = [values[g].get(b, (np.nan, 0.0))[0] for g in groups]
        stds = [values[g].get(b, (np.nan, 0.0))[1] for g in groups]
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=b)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize="small", ncols=min(len(bars), 5))
    if title:
        ax.set_title(title)
    save_figure(fig, path, dpi=110)
