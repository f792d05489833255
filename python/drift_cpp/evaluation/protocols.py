"""Split protocols: random train/test splits of one pair set, or a train pool against a fixed test pool.

Both use fixed seeds, so the same arguments give the same numbers, and all methods see the same splits.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..fit import approximation
from ..errors import DriftError
from .methods import BASELINES, Fold, MethodSpec, resolve_methods

DEFAULT_SEED = 0
MIN_TEST = 10  # fewest held-out pairs a split may have (cross_validate without groups)
# The training sizes `drift-cpp evaluate` tries, as many as the user's pairs allow.
USER_KS = (10, 20, 50, 100, 200, 500, 1000)


def user_methods() -> dict[str, MethodSpec]:
    """What `drift-cpp evaluate` compares: what `approximate` fits (the joint model of every family on the
    training pairs, and the default attribute fit it falls back to), the paper's fit, and the baselines."""
    default_fit = f"drift ({approximation.DEFAULT_METHOD} l2={approximation.DEFAULT_L2:g}, the default)"
    return {"drift-cpp (the profile's model)": "chosen",
            default_fit: (approximation.DEFAULT_METHOD, {"l2": approximation.DEFAULT_L2}),
            "drift (qp, the paper's)": "drift", **{m: m for m in ("longer", "best_single", "logistic", "bow_rm")}}


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
