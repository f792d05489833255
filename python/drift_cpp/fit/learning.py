"""Learning from use: preference pairs captured one pick at a time, and the profile kept up with them.

A profile PATH.json keeps the pairs it learned from beside it, in PATH.pairs.jsonl, a pairs file
like any other (`drift-cpp approximate` reads it). Only the new pairs are scored and the profile
fitted again; a pair is written to the pairs file (atomically) only once it is known to be scorable
(add: scored; save: tokenized, to be learned by the next add), so one that cannot be scored is
refused and never blocks the next. Undo drops the last pair from both.
chat's /ab and --learn and the server's /v1/preferences both go through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import choice, screening
from ..score.attributes import AttributeSet
from ..errors import DriftError
from ..fileio import check_output
from ..params import MIN_PROFILE_PAIRS
from ..preferences import PreferencePair, load_pairs, write_pairs
from .profile import FitOptions, Profile, pair_requests
from ..score.scorer import Scorer


def pairs_path(profile_path: str | os.PathLike) -> Path:
    """me.json -> me.pairs.jsonl"""
    path = Path(profile_path)
    return path.with_name(path.stem + ".pairs.jsonl")


def steers(profile: Optional[Profile]) -> bool:
    """Whether a profile decodes personalized: one learned from at least MIN_PROFILE_PAIRS pairs, or
    one of given weights (no pairs at all, Profile.with_weights); a younger one decodes plain."""
    return profile is not None and (profile.n_pairs >= MIN_PROFILE_PAIRS or profile.n_pairs == 0)


def top(profile: Optional[Profile]) -> list[tuple[str, float]]:
    """The attributes that steer and their weights p."""
    return [] if profile is None else [(a.id, w) for a, w in profile.decoding_weights()]


def report(profile: Profile) -> dict:
    """A profile as JSON for people and tools: each attribute's unit implicit preference and weight."""
    uip, choice = profile.unit_implicit_preference(), profile.choice
    return {"n_pairs": profile.n_pairs, "selected": profile.selected, "decode_exclude": profile.decode_exclude,
            "choice": None if choice is None else {
                "family": list(choice.family), "reason": choice.reason, "accuracy": choice.accuracy,
                "interval": choice.interval, "cv": choice.cv, "shares": choice.shares, "length_weight": profile.length_weight(),
                "words": profile.word_weights()},
            "attributes": [{"id": a["id"], "unit_implicit_preference": float(u), "p": p}
                           for a, u, p in zip(profile.attributes.to_dict()["attributes"], uip, profile.p.tolist())]}


def change(before: Optional[Profile], after: Profile) -> Optional[float]:
    """How much a refit moved the profile: the mean |P_after(chosen) - P_before(chosen)| over the pairs
    both hold, each model read on the later rows (P = the logistic of the margin). None without earlier
    pairs or a fitted model on both sides."""
    n = 0 if before is None else before.n_pairs
    if not n or before.choice is None or after.choice is None or after.W is None or after.bows is None:
        return None
    W, L = screening.impute(after.W, after.L)
    W, L, bows = W[:n], L[:n], after.bows[:n]
    p_before, p_after = (1 / (1 + np.exp(-np.clip(choice.margins(m, W, L, bows), -50, 50)))
                         for m in (before.choice.model, after.choice.model))
    return float(np.mean(np.abs(p_after - p_before)))


@dataclass
class Update:
    profile: Optional[Profile]  # None once undo removed its last pair (the files are gone)
    changed: int                # pairs added (or removed)
    before: list[tuple[str, float]]
    after: list[tuple[str, float]]

    def describe(self) -> str:
        """The change in the steering attributes, on one line."""
        was = dict(self.before)
        parts = [f"{a} {w:+.3f}" + (f" (was {was[a]:+.3f})" if a in was else " (new)") for a, w in self.after]
        parts += [f"{a} dropped" for a, _ in self.before if a not in dict(self.after)]
        return ", ".join(parts) or "no attributes"


def load(path: str | os.PathLike) -> Optional[Profile]:
    """The profile at path, or None when there is none yet."""
    return Profile.load(path) if Path(path).exists() else None


def check(path: str | os.PathLike) -> tuple[Optional[Profile], list[PreferencePair]]:
    """The profile at path (None: none yet) and its pairs, once both files are known to be writable and
    readable: what an add needs, checked before anything costly (chat checks it before the two answers)."""
    path, store = Path(path), pairs_path(path)
    for out in (path, store):
        check_output(out)
    profile = load(path)
    if profile is not None and profile.n_pairs == 0:
        raise DriftError(f"{path}: its weights were given, not learned from pairs; a fit would replace them "
                         "(learn into a new profile)")
    return profile, load_pairs(store) if store.exists() else []


def _fresh(old: Sequence[PreferencePair], pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pairs not among `old`, each once."""
    seen, fresh = {p.id for p in old}, []
    for p in pairs:
        if p.id not in seen:
            fresh.append(p)
            seen.add(p.id)
    return fresh


def save(path: str | os.PathLike, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
         options: FitOptions = FitOptions()) -> int:
    """add's first part, in milliseconds: the new pairs, once checked to be scorable (tokenized, not scored),
    are written to the pairs file, so that a pick is kept whatever comes next. add(path, [], ...) then
    learns them: it scores what the profile lacks. Returns how many pairs were new."""
    profile, old = check(path)
    fresh = _fresh(old, pairs)
    if fresh:
        attrs, o = (attributes, options) if profile is None else (profile.attributes, profile.options)
        with scorer.truncating(o.max_response_tokens):
            scorer.check(pair_requests(fresh, attrs.base, attrs.attributes)[0])
        write_pairs(pairs_path(path), list(old) + fresh)
    return len(fresh)


def add(path: str | os.PathLike, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
        options: FitOptions = FitOptions()) -> Update:
    """Adds the pairs not already in the pairs file to it and creates or updates the profile."""
    return add_many([(path, pairs)], scorer, attributes, options)[0]


def add_many(batches: Sequence[tuple[str | os.PathLike, Sequence[PreferencePair]]], scorer: Scorer,
             attributes: AttributeSet, options: FitOptions = FitOptions()) -> list[Update]:
    """add for several profiles, whole or not at all: every profile is scored before any file is written.

    Each pairs file is written before its profile: should the profile's write fail, the next add scores
    what the profile lacks. The caller serializes adds to one profile.
    """
    staged = [_stage(Path(path), pairs, scorer, attributes, options) for path, pairs in batches]
    for path, pairs, update in staged:
        if pairs is not None:
            write_pairs(pairs_path(path), pairs)
        update.profile.save(path)
    return [update for _, _, update in staged]


def _stage(path: Path, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
           options: FitOptions) -> tuple[Path, Optional[list[PreferencePair]], Update]:
    """The profile updated in memory with the pairs it lacks (scored: the new ones, and any the pairs file
    holds that it has not learned yet), and the pairs file's new content (None: unchanged)."""
    profile, old = check(path)
    fresh = _fresh(old, pairs)
    before, n_before = top(profile), 0 if profile is None else profile.n_pairs
    if profile is None:
        if not old + fresh:
            raise DriftError(f"{path}: no pairs to create the profile from")
        profile = Profile.fit(old + fresh, scorer, attributes, options)
    else:
        profile.check_updatable()
        with scorer.truncating(profile.options.max_response_tokens):  # rewards comparable with its own
            profile.update(old + fresh, scorer)
    return path, old + fresh if fresh else None, Update(profile, profile.n_pairs - n_before, before, top(profile))


def undo(path: str | os.PathLike) -> Update:
    """Removes the last pair of the pairs file from it and from the profile (nothing is scored)."""
    path, store = Path(path), pairs_path(path)
    pairs = load_pairs(store) if store.exists() else []
    if not pairs:
        raise DriftError(f"{store}: nothing to undo")
    profile = Profile.load(path)
    before = top(profile)
    last = pairs[-1].id
    if profile.pair_ids == [last]:  # nothing would be left to fit: back to no profile
        path.unlink()
        profile = None
    else:
        profile.remove([last])
        profile.save(path)  # the profile first: were the pairs file kept, the next add would re-learn the pair
    if pairs[:-1]:
        write_pairs(store, pairs[:-1])
    else:
        store.unlink()
    return Update(profile, 1, before, top(profile))
