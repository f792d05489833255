"""A user's profile: Drift Approximation (paper Algorithm 1) over their preference pairs.

W[j,i] = log π(y_w|x,s_i) − log π(y_w|x,s_0) and L[j,i] likewise for y_l come from the
scorer; the weights p come from approximation.fit. The profile keeps the per-pair
rows, so new pairs or new attributes are added by scoring only what is new.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import approximation, choice, profile_file
from .attributes import Attribute, AttributeSet, builtin_attributes
from .errors import DriftError
from .evaluation.methods import term_counts
from .models import Model
from .preferences import PreferencePair
from .scorer import ScoreRequest, Scorer

NORMALIZE = ("sum", "mean")


@dataclass(frozen=True)
class FitOptions:
    top: int = 7                # attributes used for decoding (paper: 7)
    normalize: str = "sum"      # "sum": summed log-ratio (paper); "mean": per response token
    method: str = approximation.DEFAULT_METHOD  # "qp": the paper's closed form; "logistic", "bt": regressions
    l2: float = approximation.DEFAULT_L2        # penalty of "logistic" and "bt"
    family: str = choice.AUTO   # "auto": chosen per user by cross-validation; or e.g. "attributes+length"

    def check(self, name: Callable[[str], str] = lambda key: f"--{key}") -> None:
        """The one place these values are checked; `name` says how errors name an option."""
        if self.normalize not in NORMALIZE:
            raise DriftError(f"{name('normalize')}: unknown normalization '{self.normalize}' (choose sum or mean)")
        if self.method not in approximation.METHODS:
            raise DriftError(f"{name('method')}: unknown method '{self.method}' "
                             f"(choose {', '.join(approximation.METHODS)})")
        if self.top < 1:
            raise DriftError(f"{name('top')} must be at least 1, got {self.top}")
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise DriftError(f"{name('l2')} must be a positive finite number, got {self.l2!r}")
        choice.parse_family(self.family, name("family"))


def _system(prompt: str, pair: PreferencePair) -> tuple[str, tuple]:
    """The attribute prompt leads; a system message of the pair's own follows it."""
    messages = pair.prompt
    if messages and messages[0].role == "system":
        return f"{prompt}\n{messages[0].content}", messages[1:]
    return prompt, messages


def reward_features(scorer: Scorer, pairs: Sequence[PreferencePair], base: Attribute,
                    attributes: Sequence[Attribute], normalize: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    """(W, L), each of shape (n_pairs, n_attributes): the zero-shot rewards of chosen and rejected."""
    prompts = [base] + list(attributes)
    requests = []
    for pair in pairs:
        for a in prompts:
            system, conversation = _system(a.prompt, pair)
            for response in (pair.chosen, pair.rejected):
                requests.append(ScoreRequest(system, conversation, response, label=pair.id))
    scores = scorer.score(requests, what=f"scoring {len(pairs)} pairs x {len(prompts)} prompts")
    lp = scores.logprob.reshape(len(pairs), len(prompts), 2)
    rewards = lp[:, 1:, :] - lp[:, :1, :]
    if normalize == "mean":
        rewards = rewards / scores.n_tokens.reshape(len(pairs), len(prompts), 2)[:, 1:, :]
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
    but nothing can be added to it.

    bows holds each pair's bag of words (chosen, rejected), for the length and lexical families;
    None for profiles written before them, which then choose among attributes only. `choice` is the
    model family chosen for this user (choice.choose) with its weights; None: attributes only.
    """

    def __init__(self, model: dict, attributes: AttributeSet, options: FitOptions, decode_exclude: list[str],
                 pair_ids: list[str], W: Optional[np.ndarray], L: Optional[np.ndarray], sums: np.ndarray,
                 p: np.ndarray, selected: list[str], created_at: str, updated_at: str,
                 bows: Optional[list] = None, choice: Optional[choice.Choice] = None, groups: Optional[list] = None):
        self.model, self.attributes, self.options = model, attributes, options
        self.decode_exclude, self.pair_ids = decode_exclude, pair_ids
        self.W, self.L, self.sums, self.p, self.selected = W, L, sums, p, selected
        self.created_at, self.updated_at = created_at, updated_at
        self.bows, self.choice, self.groups = bows, choice, groups
        self.path = None  # the file it was loaded from, to name it in errors

    # -- building ---------------------------------------------------------
    @classmethod
    def fit(cls, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
            options: FitOptions = FitOptions(), decode_exclude: Iterable[str] = ()) -> "Profile":
        options.check()
        decode_exclude = cls.check_decode_exclude(attributes, decode_exclude)
        W, L = reward_features(scorer, pairs, attributes.base, attributes.attributes, options.normalize)
        profile = cls._empty(scorer.model, attributes, options, decode_exclude)
        profile._add_rows([p.id for p in pairs], W, L, pair_bows(pairs), pair_groups(pairs))
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
        return cls(model.identity, attributes, options, decode_exclude, [], np.zeros((0, k)), np.zeros((0, k)),
                   np.zeros(k), np.zeros(k), [], now, now, bows=[], groups=[])

    def update(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> int:
        """Adds the pairs not seen before; returns how many were new. Only those are scored."""
        self.check_updatable()
        self.check_model(scorer.model)
        seen = set(self.pair_ids)
        new = [p for p in pairs if p.id not in seen]
        if new:
            W, L = reward_features(scorer, new, self.attributes.base, self.attributes.attributes, self.options.normalize)
            self._add_rows([p.id for p in new], W, L, pair_bows(new), pair_groups(new))
        return len(new)

    def remove(self, ids: Iterable[str]) -> int:
        """Drops the rows of these pairs and fits again (nothing is scored); returns how many were dropped."""
        self.check_updatable()
        drop = set(ids)
        keep = [i for i, pair_id in enumerate(self.pair_ids) if pair_id not in drop]
        removed = self.n_pairs - len(keep)
        if removed:
            self.pair_ids = [self.pair_ids[i] for i in keep]
            self.W, self.L = self.W[keep], self.L[keep]
            self._refit()
        return removed

    def add_attributes(self, new: Sequence[Attribute], pairs: Sequence[PreferencePair], scorer: Scorer) -> None:
        """Adds attribute columns, scoring only those columns (the base comes from the cache)."""
        self.check_updatable()
        self.check_model(scorer.model)
        by_id = {p.id: p for p in pairs}
        missing = [i for i in self.pair_ids if i not in by_id]
        if missing:
            raise DriftError(f"the pairs given lack {len(missing)} of the profile's pairs (e.g. '{missing[0]}')")
        extended = self.attributes.extend(new)
        added = extended.attributes[len(self.attributes):]
        if not added:
            return
        ordered = [by_id[i] for i in self.pair_ids]
        W_new, L_new = reward_features(scorer, ordered, self.attributes.base, added, self.options.normalize)
        self.attributes = extended
        self.W, self.L = np.hstack([self.W, W_new]), np.hstack([self.L, L_new])
        self._refit()

    def _add_rows(self, ids: list[str], W: np.ndarray, L: np.ndarray, bows: list, groups: Optional[list] = None) -> None:
        self.pair_ids = self.pair_ids + list(ids)
        self.W, self.L = np.vstack([self.W, W]), np.vstack([self.L, L])
        # Rows stored before bags of words were: the text families stay off for the whole profile.
        self.bows = None if self.bows is None else self.bows + list(bows)
        self.groups = None if self.groups is None or groups is None else self.groups + list(groups)
        self._refit()

    def _refit(self) -> None:
        self.sums = (self.W - self.L).sum(axis=0)
        self.p = approximation.fit(self.W, self.L, self.options.method, self.options.l2)
        self.choice = None
        if self.n_pairs:  # the family is chosen anew as pairs accumulate
            self.choice = choice.choose(self.W, self.L, self.bows, self.options.method, self.options.l2,
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
        # Profiles written before l2 was recorded were fitted with l2 = 1.
        options = FitOptions(**{"l2": 1.0, **data.options})
        profile = cls(data.model, attributes, options, data.decode_exclude, data.pair_ids, W, L,
                      np.array(data.sums), np.array(data.p), data.selected, data.created_at, data.updated_at,
                      bows=bows, choice=None if data.choice is None else choice_from_dict(data.choice), groups=groups)
        profile.path = path
        return profile

    def save(self, path) -> None:
        d = self.attributes.to_dict()
        o = self.options
        features = None if self.W is None else {
            "rows": [{"id": i, "w": w.tolist(), "l": l.tolist()} for i, w, l in zip(self.pair_ids, self.W, self.L)]}
        if features is not None and self.bows is not None:
            for row, bow in zip(features["rows"], self.bows):
                row["bow"] = [dict(bow[0]), dict(bow[1])]
        if features is not None and self.groups is not None:
            for row, group in zip(features["rows"], self.groups):
                row["group"] = group
        profile_file.save(path, profile_file.ProfileData(
            schema_version=profile_file.SCHEMA_VERSION, model=self.model, base=d["base"], attributes=d["attributes"],
            sums=self.sums.tolist(), n_pairs=self.n_pairs, p=self.p.tolist(), selected=self.selected,
            decode_exclude=self.decode_exclude,
            options={"top": o.top, "normalize": o.normalize, "method": o.method, "l2": o.l2, "family": o.family},
            pair_ids=self.pair_ids, created_at=self.created_at, updated_at=self.updated_at, features=features,
            choice=None if self.choice is None else choice_to_dict(self.choice)))

    @property
    def n_pairs(self) -> int:
        return len(self.pair_ids)

    def unit_implicit_preference(self) -> np.ndarray:
        return approximation.unit_implicit_preference(self.sums, max(self.n_pairs, 1))

    def check_model(self, model: Model) -> None:
        if not model.same_as(self.model):
            raise DriftError(
                f"this profile was built with {self.model.get('name')} and cannot be used with "
                f"{model.identity['name']}: its rewards come from another model"
            )

    def decoding_weights(self, top: Optional[int] = None, exclude: Iterable[str] = ()) -> list[tuple[Attribute, float]]:
        """The attributes and weights that steer decoding: the top m by |p|, never decode_exclude."""
        exclude = set(exclude)
        unknown = exclude - set(self.attributes.ids)
        if unknown:
            raise DriftError(f"unknown attribute id(s): {', '.join(sorted(unknown))}")
        mask = np.array([i in exclude or i in self.decode_exclude for i in self.attributes.ids])
        idx = approximation.top_m(self.p, top or self.options.top, mask)
        attrs = self.attributes.attributes
        return [(attrs[i], float(self.p[i])) for i in idx]

    def predict(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> np.ndarray:
        """Margin of each pair by the chosen model: > 0 predicts that 'chosen' is preferred."""
        self.check_model(scorer.model)
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

    def word_weights(self, n: int = DECODE_WORDS) -> list[tuple[str, float]]:
        """The strongest words of the lexical family, each with the reward of one occurrence."""
        if not (self.choice and "lexical" in self.choice.family):
            return []
        return choice.word_rewards(self.choice.model, n)


def choice_to_dict(c: choice.Choice) -> dict:
    m = c.model
    return {"family": list(c.family), "reason": c.reason, "n_pairs": c.n_pairs, "cv": c.cv,
            "model": {"attributes": None if m.attributes is None else m.attributes.tolist(), "length": m.length,
                      "words": {w: list(v) for w, v in m.words.items()}, "word_norm": m.word_norm}}


def choice_from_dict(d: dict) -> choice.Choice:
    m = d["model"]
    model = choice.Model(tuple(d["family"]), None if m["attributes"] is None else np.array(m["attributes"]),
                         m["length"], {w: tuple(v) for w, v in m["words"].items()}, m["word_norm"])
    return choice.Choice(tuple(d["family"]), d["reason"], d["n_pairs"], d["cv"], model)
