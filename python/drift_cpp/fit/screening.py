"""Attribute screening: every attribute on the first pairs, then mostly the ones that matter.

Scoring a pair under all 41 attribute prompts is the cost of a profile, yet decoding uses
only the top few attributes. Screening scores the first `n0` pairs under every attribute;
each later pair is scored under the base prompt and

  * the `keep` attributes with the largest |t| = |mean(W - L)| / (sd(W - L) / sqrt(n)) over
    the pairs scored so far: a large and stable margin across pairs,
  * the `top` attributes the fit itself ranks first by |p| (those that steer decoding),
  * `explore` more attributes drawn at random (seeded by the pair's position), so an
    attribute dropped early is still sampled and can come back.

Decisions are taken at fixed positions (n0, n0 + block, n0 + 2 block, ...) from the pairs
before that position only. So the columns a pair gets depend on the pairs before it and on
its position, not on how the pairs were split between `approximate` and `profile update`:
updating a screened profile scores exactly what a screened fit of all the pairs would.

Unscored entries are NaN in W and L. The fit sees each NaN replaced by its column's mean
over the pairs scored under that attribute (`impute`), so an attribute's sum of W - L
estimates its sum over all pairs, and one scored on every pair is fitted as before.
The constants and the evidence for them: docs/screening.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

from . import approximation
from ..errors import DriftError


@dataclass(frozen=True)
class ScreenOptions:
    # Chosen on DSP (docs/screening.md): 39% of the tokens of exhaustive scoring at 48 pairs,
    # 1.4 points below its accuracy (95% CI -3.6 to +0.5).
    n0: int = 4        # first pairs scored under every attribute
    keep: int = 2      # attributes kept by |t|, besides the fit's top ones
    explore: int = 1   # attributes drawn at random for each later pair
    block: int = 8     # pairs between two screening decisions
    seed: int = 0      # of the random draws

    def check(self, name: Callable[[str], str] = lambda key: f"screen.{key}") -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low = 1 if f.name in ("n0", "block") else 0
            if not (isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**31):
                raise DriftError(f"{name(f.name)} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, name: Callable[[str], str] = lambda key: f"screen.{key}") -> "ScreenOptions":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise DriftError(f"{name(sorted(unknown)[0])} is not a screening option")
        options = cls(**d)
        options.check(name)
        return options


def decision_point(j: int, options: ScreenOptions) -> int:
    """The position whose preceding pairs decide pair j's columns (j itself before n0: all columns)."""
    if j < options.n0:
        return j
    return options.n0 + (j - options.n0) // options.block * options.block


def blocks(start: int, count: int, options: ScreenOptions) -> list[tuple[int, int]]:
    """Runs [a, b) of positions start..start+count-1 that share one decision point."""
    out, a = [], start
    while a < start + count:
        if a < options.n0:
            b = min(options.n0, start + count)
        else:
            b = min(decision_point(a, options) + options.block, start + count)
        out.append((a, b))
        a = b
    return out


def impute(W: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W and L with each NaN replaced by its column's mean over the scored pairs (0 if none is)."""
    if not (np.isnan(W).any() or np.isnan(L).any()):
        return W, L
    out = []
    for M in (W, L):
        scored = ~np.isnan(M)
        n = scored.sum(axis=0)
        mean = np.where(n > 0, np.nansum(M, axis=0) / np.maximum(n, 1), 0.0)
        out.append(np.where(scored, M, mean))
    return out[0], out[1]


def t_statistic(D: np.ndarray) -> np.ndarray:
    """|mean| / standard error of each column over its scored (non-NaN) rows; inf with < 2 rows."""
    n = (~np.isnan(D)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(D, axis=0) / n
        sd = np.sqrt(np.nansum((D - mean) ** 2, axis=0) / np.maximum(n - 1, 1))
        t = np.abs(mean) / (sd / np.sqrt(n))
    t = np.where(np.isnan(t), 0.0, t)  # a constant column (sd 0, mean 0) says nothing
    return np.where(n < 2, np.inf, t)


def kept(W: np.ndarray, L: np.ndarray, p: np.ndarray, top: int, options: ScreenOptions) -> list[int]:
    """The attributes every pair after this point is scored under: top `keep` by |t| and top `top` by |p|."""
    by_t = approximation.top_m(t_statistic(W - L), options.keep)
    by_fit = approximation.top_m(p, top)
    return sorted(set(by_t.tolist()) | set(by_fit.tolist()))


def block_columns(W: np.ndarray, L: np.ndarray, start: int, count: int, top: int, options: ScreenOptions,
                  fit: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[list[int]]:
    """The columns of positions start..start+count-1 (one run of `blocks`), given the rows W, L of
    the positions before start; `fit` maps imputed W, L to the weights p."""
    return [columns(j, W.shape[1], kept_at(W, L, decision_point(start, options), top, options, fit), options)
            for j in range(start, start + count)]


def kept_at(W: np.ndarray, L: np.ndarray, s: int, top: int, options: ScreenOptions,
            fit: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[int]:
    """The attributes kept at decision point s, from the pairs before it (all of them before n0)."""
    if s < options.n0:
        return list(range(W.shape[1]))
    return kept(W[:s], L[:s], fit(*impute(W[:s], L[:s])), top, options)


def columns(j: int, k: int, kept_now: list[int], options: ScreenOptions) -> list[int]:
    """The attribute columns pair j is scored under."""
    if j < options.n0:
        return list(range(k))
    rest = [i for i in range(k) if i not in set(kept_now)]
    rng = np.random.default_rng([options.seed, j])
    extra = rng.choice(len(rest), size=min(options.explore, len(rest)), replace=False) if rest else []
    return sorted(set(kept_now) | {rest[i] for i in extra})
