"""A user's profile: Drift Approximation (paper Algorithm 1) over their preference pairs.

W[j,i] = log π(y_w|x,s_i) − log π(y_w|x,s_0) and L[j,i] likewise for y_l come from the
scorer; the weights p come from approximation.fit. The profile keeps the per-pair
rows, so new pairs or new attributes are added by scoring only what is new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import approximation, profile_file
from .attributes import Attribute, AttributeSet, builtin_attributes
from .errors import DriftError
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


class Profile:
    def __init__(self, data: profile_file.ProfileData):
        self.data = data
        self.path = None  # the file it was loaded from, to name it in errors

    # -- building ---------------------------------------------------------
    @classmethod
    def fit(cls, pairs: Sequence[PreferencePair], scorer: Scorer, attributes: AttributeSet,
            options: FitOptions = FitOptions(), decode_exclude: Iterable[str] = ()) -> "Profile":
        options.check()
        decode_exclude = cls.check_decode_exclude(attributes, decode_exclude)
        W, L = reward_features(scorer, pairs, attributes.base, attributes.attributes, options.normalize)
        profile = cls._empty(scorer.model, attributes, options, decode_exclude)
        profile._add_rows([p.id for p in pairs], W, L)
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
        profile.data.p = [float(weights.get(i, 0.0)) for i in attributes.ids]
        return profile

    @classmethod
    def _empty(cls, model: Model, attributes: AttributeSet, options: FitOptions, decode_exclude: list) -> "Profile":
        now = profile_file.utc_now()
        d = attributes.to_dict()
        return cls(profile_file.ProfileData(
            schema_version=profile_file.SCHEMA_VERSION, model=model.identity, base=d["base"],
            attributes=d["attributes"], sums=[0.0] * len(attributes), n_pairs=0, p=[0.0] * len(attributes),
            selected=[], decode_exclude=decode_exclude,
            options={"top": options.top, "normalize": options.normalize, "method": options.method, "l2": options.l2},
            pair_ids=[], created_at=now, updated_at=now, features={"rows": []}))

    def update(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> int:
        """Adds the pairs not seen before; returns how many were new. Only those are scored."""
        self.check_updatable()
        self.check_model(scorer.model)
        seen = set(self.data.pair_ids)
        new = [p for p in pairs if p.id not in seen]
        if new:
            W, L = reward_features(scorer, new, self.attributes.base, self.attributes.attributes, self.options.normalize)
            self._add_rows([p.id for p in new], W, L)
        return len(new)

    def add_attributes(self, new: Sequence[Attribute], pairs: Sequence[PreferencePair], scorer: Scorer) -> None:
        """Adds attribute columns, scoring only those columns (the base comes from the cache)."""
        self.check_updatable()
        self.check_model(scorer.model)
        by_id = {p.id: p for p in pairs}
        missing = [i for i in self.data.pair_ids if i not in by_id]
        if missing:
            raise DriftError(f"the pairs given lack {len(missing)} of the profile's pairs (e.g. '{missing[0]}')")
        extended = self.attributes.extend(new)
        added = extended.attributes[len(self.attributes):]
        if not added:
            return
        ordered = [by_id[i] for i in self.data.pair_ids]
        W_new, L_new = reward_features(scorer, ordered, self.attributes.base, added, self.options.normalize)
        W, L = self.features()
        self.data.attributes = extended.to_dict()["attributes"]
        self.data.features = {"rows": []}
        self.data.pair_ids, self.data.n_pairs = [], 0
        self._add_rows([p.id for p in ordered], np.hstack([W, W_new]), np.hstack([L, L_new]))

    def _add_rows(self, ids: list[str], W: np.ndarray, L: np.ndarray) -> None:
        rows = self.data.features["rows"]
        rows += [{"id": i, "w": w.tolist(), "l": l.tolist()} for i, w, l in zip(ids, W, L)]
        self.data.pair_ids += ids
        self.data.n_pairs = len(self.data.pair_ids)
        self._refit()

    def _refit(self) -> None:
        W, L = self.features()
        v = (W - L).sum(axis=0)
        self.data.sums = v.tolist()
        self.data.p = approximation.fit(W, L, self.options.method, self.options.l2).tolist()
        exclude = np.array([a["id"] in self.data.decode_exclude for a in self.data.attributes])
        chosen = approximation.top_m(np.array(self.data.p), self.options.top, exclude)
        self.data.selected = [self.data.attributes[i]["id"] for i in chosen]
        self.data.updated_at = profile_file.utc_now()

    def check_updatable(self) -> None:
        """Pairs and attributes are added from the per-pair rows, which a profile may lack."""
        if self.data.features is None:
            where = f"{self.path}: " if self.path else ""
            raise DriftError(f"{where}field 'features' is null, so nothing can be added to this profile; "
                             "fit it again with drift-cpp approximate")

    # -- reading ----------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Profile":
        profile = cls(profile_file.load(path))
        profile.path = path
        return profile

    def save(self, path) -> None:
        profile_file.save(path, self.data)

    @property
    def attributes(self) -> AttributeSet:
        return AttributeSet.from_dict({"base": self.data.base, "attributes": self.data.attributes})

    @property
    def options(self) -> FitOptions:
        # Profiles written before l2 was recorded were fitted with l2 = 1.
        return FitOptions(**{"l2": 1.0, **self.data.options})

    @property
    def p(self) -> np.ndarray:
        return np.array(self.data.p)

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.data.features["rows"]
        k = len(self.data.attributes)
        W = np.array([r["w"] for r in rows], dtype=np.float64).reshape(len(rows), k)
        L = np.array([r["l"] for r in rows], dtype=np.float64).reshape(len(rows), k)
        return W, L

    def unit_implicit_preference(self) -> np.ndarray:
        return approximation.unit_implicit_preference(np.array(self.data.sums), max(self.data.n_pairs, 1))

    def check_model(self, model: Model) -> None:
        if not model.same_as(self.data.model):
            raise DriftError(
                f"this profile was built with {self.data.model.get('name')} and cannot be used with "
                f"{model.identity['name']}: its rewards come from another model"
            )

    def decoding_weights(self, top: Optional[int] = None, exclude: Iterable[str] = ()) -> list[tuple[Attribute, float]]:
        """The attributes and weights that steer decoding: the top m by |p|, never decode_exclude."""
        exclude = set(exclude)
        unknown = exclude - set(a["id"] for a in self.data.attributes)
        if unknown:
            raise DriftError(f"unknown attribute id(s): {', '.join(sorted(unknown))}")
        mask = np.array([a["id"] in exclude or a["id"] in self.data.decode_exclude for a in self.data.attributes])
        idx = approximation.top_m(self.p, top or self.options.top, mask)
        attrs = self.attributes.attributes
        return [(attrs[i], float(self.p[i])) for i in idx]

    def predict(self, pairs: Sequence[PreferencePair], scorer: Scorer) -> np.ndarray:
        """Margin of each pair: > 0 predicts that 'chosen' is preferred."""
        self.check_model(scorer.model)
        W, L = reward_features(scorer, pairs, self.attributes.base, self.attributes.attributes, self.options.normalize)
        return approximation.predict(self.p, W, L)
