"""A user's profile: Drift Approximation (paper Algorithm 1) over their preference pairs.

W[j,i] = log π(y_w|x,s_i) − log π(y_w|x,s_0) and L[j,i] likewise for y_l come from the
scorer; the weights p come from approximation.fit. The profile keeps the per-pair
rows, so new pairs or new attributes are added by scoring only what is new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from . import approximation, choice, profile_file, screening
from ..score.attributes import Attribute, AttributeSet, builtin_attributes
from ..errors import DriftError
from .features import term_counts
from ..models import Model
from ..params import ATTRIBUTE_UNITS
from ..preferences import PreferencePair
from .options import FitOptions
from .screening import ScreenOptions
from ..score.scorer import Cost, ScoreRequest, Scorer

def _system(prompt: str, pair: PreferencePair) -> tuple[str, tuple]:
    """The attribute prompt leads; a system message of the pair's own follows it."""
    messages = pair.prompt
    if messages and messages[0].role == "system":
        return f"{prompt}\n{messages[0].content}", messages[1:]
    return prompt, messages


def pair_requests(pairs: Sequence[PreferencePair], base: Attribute, attributes: Sequence[Attribute],
                  columns: Optional[Sequence[Sequence[int]]] = None) -> tuple[list[ScoreRequest], list[tuple[int, int]]]:
    """The requests that score the pairs (chosen, then rejected, under the base prompt and each attribute
    of `columns`, by default all), and the (pair, prompt) each two of them fill; prompt 0 is the base."""
    prompts = [base] + list(attributes)
    if columns is None:
        columns = [range(len(attributes))] * len(pairs)
    requests, where = [], []
    for j, pair in enumerate(pairs):
        for i in [-1] + list(columns[j]):
            system, conversation = _system(prompts[i + 1].prompt, pair)
            for response in (pair.chosen, pair.rejected):
                requests.append(ScoreRequest(system, conversation, response, label=pair.where or pair.id))
            where.append((j, i + 1))
    return requests, where


def reward_features(scorer: Scorer, pairs: Sequence[PreferencePair], base: Attribute,
                    attributes: Sequence[Attribute], normalize: str = "sum",
                    columns: Optional[Sequence[Sequence[int]]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(W, L), each of shape (n_pairs, n_attributes): the zero-shot rewards of chosen and rejected.

    With `columns` (attribute indices, one list per pair) a pair is scored only under the base
    prompt and those attributes; the other entries of its rows are NaN."""
    prompts = [base] + list(attributes)
    requests, where = pair_requests(pairs, base, attributes, columns)
    n_items = len(where)
    what = (f"scoring {len(pairs)} pairs x {len(prompts)} prompts" if n_items == len(pairs) * len(prompts)
            else f"scoring {len(pairs)} pairs x {n_items / max(len(pairs), 1):.1f} prompts (screened)")
    scores = scorer.score(requests, what=what)
    lp = np.full((len(pairs), len(prompts), 2), np.nan)
    n_tokens = np.full((len(pairs), len(prompts), 2), np.nan)
    rows, cols = np.array(where, dtype=np.int64).reshape(-1, 2).T
    lp[rows, cols] = scores.logprob.reshape(n_items, 2)
    n_tokens[rows, cols] = scores.n_tokens.reshape(n_items, 2)
    rewards = lp[:, 1:, :] - lp[:, :1, :]
    if normalize == "mean":
        rewards = rewards / n_tokens[:, 1:, :]
    return rewards[:, :, 0], rewards[:, :, 1]


def pair_bows(pairs: Sequence[PreferencePair]) -> list[tuple[dict, dict]]:
    """The bag of words of each pair's chosen and rejected responses: what the length and lexical families read."""
    return [(term_counts(p.chosen), term_counts(p.rejected)) for p in pairs]


def pair_groups(pairs: Sequence[PreferencePair]) -> list[str]:
    """A short hash of each pair's prompt: the family choice holds out whole prompts."""
    return [hashlib.sha256(json.dumps([[m.role, m.content] for m in p.prompt]).encode("utf-8")).hexdigest()[:16]
            for p in pairs]


# Words whose biases steer decoding: the strongest by |weight|, so that a few hundred training words do not
# each nudge their tokens.
DECODE_WORDS = 20


class Profile:
    """A user's profile as typed state: the sLM it was scored with, the attributes, the fit options,
    the per-pair rewards W and L (rows in pair_ids order), and what the fit made of them: p and the
    attributes selected for decoding. profile_file only reads and writes it (ProfileData).

    W and L are None for a profile stored without its per-pair rows: it decodes and predicts,
    but nothing can be added to it. With `screen` (screening.ScreenOptions) pairs are scored under
    the attributes that matter so far (screening.py); entries not scored are NaN. Without it every
    pair is scored under every attribute (--exhaustive, and profiles made before screening).
    `cost` adds up what scoring this profile's pairs took (fit, updates, added attributes).

    bows holds each pair's bag of words (chosen, rejected), for the length and lexical families;
    None for profiles written before them, which then choose among attributes only. `choice` is the
    model family chosen for this user (choice.choose) with its weights; None: attributes only.
    """

    def __init__(self, *, model: dict, attributes: AttributeSet, options: FitOptions, decode_exclude: list[str],
                 pair_ids: list[str], W: Optional[np.ndarray], L: Optional[np.ndarray], sums: np.ndarray,
                 p: np.ndarray, selected: list[str], created_at: str, updated_at: str,
                 bows: Optional[list] = None, choice: Optional[choice.Choice] = None, groups: Optional[list] = None):
        self.model, self.attributes, self.options = model, attributes, options
        self.decode_exclude, self.pair_ids = decode_exclude, pair_ids
        self.W, self.L, self.sums, self.p, self.selected = W, L, sums, p, selected
        self.created_at, self.updated_at = created_at, updated_at
        self.bows, self.choice, self.groups = bows, choice, groups
        self.path = None  # the file it was loaded from, to name it in errors
        self.screen: Optional[ScreenOptions] = None
        self.cost = Cost()

    # -- building ---------------------------------------------------------
    @classmethod
    def fit(cls, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
            options: FitOptions = FitOptions(), decode_exclude: Iterable[str] = (),
            screen: Optional[ScreenOptions] = ScreenOptions()) -> "Profile":
        """Scores the pairs and fits p. screen=None scores every pair under every attribute (exhaustive)."""
        options = replace(options, max_response_tokens=scorer.max_response_tokens)
        options.check()
        if screen is not None:
            screen.check()
        decode_exclude = cls.check_decode_exclude(attributes, decode_exclude)
        profile = cls._empty(scorer.model, attributes, options, decode_exclude)
        profile.screen = screen
        profile._score_pairs(pairs, scorer)
        return profile

    @staticmethod
    def check_decode_exclude(attributes: AttributeSet, decode_exclude: Iterable[str]) -> list[str]:
        decode_exclude = list(decode_exclude)
        unknown = [a for a in decode_exclude if a not in attributes.ids]
        if unknown:
            raise DriftError(f"unknown attribute id(s) in decode_exclude: {', '.join(unknown)}")
        return decode_exclude

    @classmethod
    def with_weights(cls, model: Model, weights: Mapping[str, float]) -> "Profile":
        """A profile with given weights and no pairs, which steers decoding with exactly those attributes."""
        attributes = builtin_attributes()
        profile = cls._empty(model, attributes, FitOptions(top=max(len(weights), 1)), [])
        profile.p = np.array([float(weights.get(i, 0.0)) for i in attributes.ids])
        return profile

    @classmethod
    def _empty(cls, model: Model, attributes: AttributeSet, options: FitOptions, decode_exclude: list) -> "Profile":
        now, k = profile_file.utc_now(), len(attributes)
        return cls(model=model.identity, attributes=attributes, options=options, decode_exclude=decode_exclude,
                   pair_ids=[], W=np.zeros((0, k)), L=np.zeros((0, k)), sums=np.zeros(k), p=np.zeros(k), selected=[],
                   created_at=now, updated_at=now, bows=[], groups=[])

    def update(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> int:
        """Adds the pairs not seen before; returns how many were new. Only those are scored."""
        self.check_updatable()
        self.check_scorer(scorer)
        new = [p for p, row in zip(pairs, self._rows(pairs)) if row is None]
        if new:
            self._score_pairs(new, scorer)
        return len(new)

    def _rows(self, pairs: Sequence[PreferencePair]) -> list[Optional[int]]:
        """The row of each pair (None: not in the profile). Rows from before content ids have the
        `<file name>:<line>` id of their pair, which another file's pair shares: such a row is the pair only
        where its recorded words and prompt agree, and then takes the pair's id."""
        index = {pair_id: i for i, pair_id in enumerate(self.pair_ids)}
        rows = []
        for p in pairs:
            i = index.get(p.id)
            if i is None and p.legacy_id in index and p.id not in index and self._holds(index[p.legacy_id], p):
                i = index.pop(p.legacy_id)
                self.pair_ids = self.pair_ids[:i] + [p.id] + self.pair_ids[i + 1:]
                index[p.id] = i
            rows.append(i)
        return rows

    def _holds(self, i: int, pair: PreferencePair) -> bool:
        """Whether row i was scored from this pair, as far as the row records it (profiles written
        before the words and prompt hashes were recorded trust the id)."""
        return ((self.bows is None or tuple(self.bows[i]) == pair_bows([pair])[0])
                and (self.groups is None or self.groups[i] == pair_groups([pair])[0]))

    def remove(self, ids: Iterable[str]) -> int:
        """Drops the rows of these pairs and fits again (nothing is scored); returns how many were dropped."""
        self.check_updatable()
        drop = set(ids)
        keep = [i for i, pair_id in enumerate(self.pair_ids) if pair_id not in drop]
        removed = self.n_pairs - len(keep)
        if removed:
            self.pair_ids = [self.pair_ids[i] for i in keep]
            self.W, self.L = self.W[keep], self.L[keep]
            self.bows = None if self.bows is None else [self.bows[i] for i in keep]
            self.groups = None if self.groups is None else [self.groups[i] for i in keep]
            self._refit()
        return removed

    def _score_pairs(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> None:
        """Scores new pairs after the profile's own and refits: all columns, or those screening picks."""
        before, attrs, start = scorer.cost, self.attributes, self.n_pairs
        runs = screening.blocks(start, len(pairs), self.screen) if self.screen else [(start, start + len(pairs))]
        if len(runs) > 1:  # runs are scored one after the other: a pair too long fails before any is scored
            scorer.check(pair_requests(pairs, attrs.base, attrs.attributes)[0])
        for a, b in runs:  # positions in the profile; a screened run's columns come from the rows before it
            columns = None if self.screen is None else screening.block_columns(
                self.W, self.L, a, b - a, self.options.top, self.screen, self._fit)
            run = pairs[a - start : b - start]
            W, L = reward_features(scorer, run, attrs.base, attrs.attributes, self.options.normalize, columns)
            self._add_rows([p.id for p in run], W, L, pair_bows(run), pair_groups(run))
        if runs:  # once: the family choice's cross-validation is the costly part, and runs need only the rows
            self._refit()
        self.cost += scorer.cost - before

    def _fit(self, W: np.ndarray, L: np.ndarray) -> np.ndarray:
        return approximation.fit(W, L, self.options.method, self.options.l2)

    def add_attributes(self, new: Sequence[Attribute], pairs: Sequence[PreferencePair], scorer: Scorer) -> None:
        """Adds attribute columns, scoring only those columns (the base comes from the cache)."""
        self.check_updatable()
        self.check_scorer(scorer)
        by_row = {row: p for p, row in zip(pairs, self._rows(pairs)) if row is not None}
        missing = [pair_id for i, pair_id in enumerate(self.pair_ids) if i not in by_row]
        if missing:
            raise DriftError(f"the pairs given lack {len(missing)} of the profile's pairs (e.g. '{missing[0]}')")
        extended = self.attributes.extend(new)
        added = extended.attributes[len(self.attributes):]
        if not added:
            return
        ordered = [by_row[i] for i in range(self.n_pairs)]
        before = scorer.cost
        W_new, L_new = reward_features(scorer, ordered, self.attributes.base, added, self.options.normalize)
        self.cost += scorer.cost - before
        self.attributes = extended
        self.W, self.L = np.hstack([self.W, W_new]), np.hstack([self.L, L_new])
        self._refit()

    def _add_rows(self, ids: list[str], W: np.ndarray, L: np.ndarray, bows: list, groups: Optional[list] = None) -> None:
        """Appends scored rows; the caller refits (_refit) once they are all in."""
        self.pair_ids = self.pair_ids + list(ids)
        self.W, self.L = np.vstack([self.W, W]), np.vstack([self.L, L])
        # Rows stored before bags of words were: the text families stay off for the whole profile.
        self.bows = None if self.bows is None else self.bows + list(bows)
        self.groups = None if self.groups is None or groups is None else self.groups + list(groups)

    def _refit(self) -> None:
        # Screened profiles: each unscored entry counts at its column's mean (screening.impute);
        # a profile scored under every attribute is fitted on W and L as they are.
        W, L = screening.impute(self.W, self.L)
        self.sums = (W - L).sum(axis=0)
        self.p = self._fit(W, L)
        self.choice = None
        if self.n_pairs:  # the family is chosen anew as pairs accumulate
            self.choice = choice.choose(W, L, self.bows, self.options.method, self.options.l2,
                                        choice.parse_family(self.options.family), self.groups)
            if "attributes" in self.choice.family and self.choice.family != ("attributes",):
                # Decode with the attribute direction of the joint fit: the other families carry their own share.
                self.p = approximation.normalize(self.choice.model.attributes)
        ids = self.attributes.ids
        exclude = np.array([i in self.decode_exclude for i in ids])
        self.selected = [ids[i] for i in approximation.top_m(self.p, self.options.top, exclude)]
        self.updated_at = profile_file.utc_now()

    def check_updatable(self) -> None:
        """Pairs and attributes are added from the per-pair rows, which a profile may lack."""
        if self.W is None:
            where = f"{self.path}: " if self.path else ""
            raise DriftError(f"{where}field 'features' is null, so nothing can be added to this profile; "
                             "fit it again with drift-cpp approximate")

    # -- reading ----------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Profile":
        data = profile_file.load(path)
        attributes = AttributeSet.from_dict({"base": data.base, "attributes": data.attributes})
        k = len(attributes)
        W = L = bows = groups = None
        if data.features is not None:
            rows = data.features["rows"]
            W = np.array([r["w"] for r in rows], dtype=np.float64).reshape(len(rows), k)
            L = np.array([r["l"] for r in rows], dtype=np.float64).reshape(len(rows), k)
            bows = [tuple(r["bow"]) for r in rows] if all("bow" in r for r in rows) else None
            groups = [r["group"] for r in rows] if all("group" in r for r in rows) else None
        options = FitOptions(**data.options)  # every option: profile_file.migrate filled those older files lack
        profile = cls(model=data.model, attributes=attributes, options=options, decode_exclude=data.decode_exclude,
                      pair_ids=data.pair_ids, W=W, L=L, sums=np.array(data.sums), p=np.array(data.p),
                      selected=data.selected, created_at=data.created_at, updated_at=data.updated_at, bows=bows, choice=None if data.choice is None else choice_from_dict(data.choice), groups=groups)
        profile.path = path
        if data.screen is not None:
            profile.screen = ScreenOptions.from_dict(data.screen["options"])
        if data.cost is not None:
            profile.cost = Cost(**data.cost)
        return profile

    def save(self, path) -> None:
        profile_file.save(path, self.to_data())

    def to_data(self) -> profile_file.ProfileData:
        d = self.attributes.to_dict()
        o = self.options
        nulls = lambda row: [None if np.isnan(x) else x for x in row.tolist()]  # noqa: E731 (not scored)
        features = None if self.W is None else {
            "rows": [{"id": i, "w": nulls(w), "l": nulls(l)} for i, w, l in zip(self.pair_ids, self.W, self.L)]}
        if features is not None and self.bows is not None:
            for row, bow in zip(features["rows"], self.bows):
                row["bow"] = [dict(bow[0]), dict(bow[1])]
        if features is not None and self.groups is not None:
            for row, group in zip(features["rows"], self.groups):
                row["group"] = group
        screen = None
        if self.screen is not None:
            next_point = screening.decision_point(self.n_pairs, self.screen)
            kept = [] if self.W is None else screening.kept_at(self.W, self.L, next_point, self.options.top,
                                                               self.screen, self._fit)
            screen = {"options": self.screen.to_dict(), "kept": [self.attributes.ids[i] for i in kept]}
        return profile_file.ProfileData(
            schema_version=profile_file.SCHEMA_VERSION, model=self.model, base=d["base"], attributes=d["attributes"],
            sums=self.sums.tolist(), n_pairs=self.n_pairs, p=self.p.tolist(), selected=self.selected,
            decode_exclude=self.decode_exclude,
            options={"top": o.top, "normalize": o.normalize, "method": o.method, "l2": o.l2, "family": o.family,
                     "max_response_tokens": o.max_response_tokens},
            pair_ids=self.pair_ids, created_at=self.created_at, updated_at=self.updated_at, features=features,
            choice=None if self.choice is None else choice_to_dict(self.choice), screen=screen,
            cost=self.cost.to_dict())

    @property
    def n_pairs(self) -> int:
        return len(self.pair_ids)

    def scored_fraction(self) -> float:
        """Share of the pair x attribute entries scored (1 without screening)."""
        if self.W is None or self.W.size == 0:
            return 1.0
        return float(np.mean(~np.isnan(self.W)))

    def unit_implicit_preference(self) -> np.ndarray:
        return approximation.unit_implicit_preference(self.sums, max(self.n_pairs, 1))

    def check_scorer(self, scorer: Scorer) -> None:
        """New rows must be scored like the profile's: by its model, on as many response tokens."""
        self.check_model(scorer.model)
        if scorer.max_response_tokens != self.options.max_response_tokens:
            def say(n):
                return f"the first {n} response tokens" if n else "whole responses"
            raise DriftError(f"this profile was scored on {say(self.options.max_response_tokens)} and the scorer "
                             f"reads {say(scorer.max_response_tokens)}: the rewards would not be comparable")

    def check_model(self, model: Model) -> None:
        if not model.same_as(self.model):
            was, now = model.names(self.model)
            raise DriftError(f"this profile was built with {was} and cannot be used with {now}: "
                             "its rewards come from another model")

    def decoding_weights(self, top: Optional[int] = None, exclude: Iterable[str] = (),
                         units: str = "unit") -> list[tuple[Attribute, float]]:
        """The attributes and weights that steer decoding: the top m by |p|, never decode_exclude.
        units "joint": p times attribute_scale("joint"), the joint fit's own coefficients."""
        exclude = set(exclude)
        unknown = exclude - set(self.attributes.ids)
        if unknown:
            raise DriftError(f"unknown attribute id(s): {', '.join(sorted(unknown))}")
        mask = np.array([i in exclude or i in self.decode_exclude for i in self.attributes.ids])
        idx = approximation.top_m(self.p, top or self.options.top, mask)
        attrs, scale = self.attributes.attributes, self.attribute_scale(units)
        return [(attrs[i], float(self.p[i]) * scale) for i in idx]

    def attribute_scale(self, units: str) -> float:
        """What the unit direction p is multiplied by to steer. "unit": 1 (the paper's p). "joint": the norm
        of the joint fit's attribute coefficients, so that the attributes steer in the units of the margin the
        length and word weights share; the paper's model alone has no other units, so 1 there."""
        if units not in ATTRIBUTE_UNITS:
            raise DriftError(f"unknown attribute units '{units}' (choose {', '.join(ATTRIBUTE_UNITS)})")
        joint = self.choice is not None and "attributes" in self.choice.family and self.choice.family != ("attributes",)
        return float(np.linalg.norm(self.choice.model.attributes)) if units == "joint" and joint else 1.0

    def predict(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> np.ndarray:
        """Margin of each pair by the chosen model: > 0 predicts that 'chosen' is preferred."""
        self.check_scorer(scorer)
        W, L = reward_features(scorer, pairs, self.attributes.base, self.attributes.attributes, self.options.normalize)
        if self.choice is None:
            return approximation.predict(self.p, W, L)
        return choice.margins(self.choice.model, W, L, pair_bows(pairs))

    # -- the families' decoding terms ----------------------------------------
    def uses_attributes(self) -> bool:
        return self.choice is None or "attributes" in self.choice.family

    def length_weight(self) -> float:
        """The chosen model's weight per e-fold of length (0 without the length family)."""
        return self.choice.model.length if self.choice and "length" in self.choice.family else 0.0

    def length_target(self, beta: float) -> float:
        """The length in words decoding steers toward at this beta (choice.length_target over the answers of
        the profile's pairs); 0 without the length family or the pairs' words."""
        if not (self.length_weight() and self.bows):
            return 0.0
        return choice.length_target(self.bows, self.length_weight(), beta)

    def word_weights(self, n: int = DECODE_WORDS) -> list[tuple[str, float]]:
        """The strongest words of the lexical family, each with the reward of one occurrence."""
        if not (self.choice and "lexical" in self.choice.family):
            return []
        return choice.word_rewards(self.choice.model, n)


def choice_to_dict(c: choice.Choice) -> dict:
    m = c.model
    return {"family": list(c.family), "reason": c.reason, "n_pairs": c.n_pairs, "cv": c.cv, "shares": c.shares,
            "model": {"attributes": None if m.attributes is None else m.attributes.tolist(), "length": m.length,
                      "words": {w: list(v) for w, v in m.words.items()}, "word_norm": m.word_norm}}


def choice_from_dict(d: dict) -> choice.Choice:
    m = d["model"]
    model = choice.Model(tuple(d["family"]), None if m["attributes"] is None else np.array(m["attributes"]),
                         m["length"], {w: tuple(v) for w, v in m["words"].items()}, m["word_norm"])
    return choice.Choice(tuple(d["family"]), d["reason"], d["n_pairs"], d["cv"], model, d["shares"])
