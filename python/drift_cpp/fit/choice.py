"""Per-user model: which feature families explain this user's pairs, and how much each.

A user's taste is often length or wording, which attribute rewards only partly see. Three families:

    attributes  the zero-shot attribute rewards D = W - L (the paper's model)
    length      log(1 + words of chosen) - log(1 + words of rejected): one weight, per e-fold of length
    lexical     tfidf(chosen) - tfidf(rejected), the Bradley-Terry model of evaluation's bow_rm

The default ("auto") fits them together: one Bradley-Terry fit over the joined columns, each family
shrunk toward zero by its own l2 prior (the attributes' is the fit's own l2; Priors holds the
others'). A family the pairs do not support keeps a small weight rather than being switched on or
off; its share of the fitted margins on the user's pairs (`shares`) says how much it weighs in the
model that decodes. Below MIN_PAIRS pairs, or without the responses' texts, the model is the
paper's attributes alone.

Why shrinkage rather than a per-user choice of families, and how the priors were chosen (on development
users only, by nested evaluation): docs/results.md, "Which features explain a user's picks?". The user's
own cross-validation is still run and recorded, for `profile show`: the joint model's accuracy with an
interval, and each family's alone.

A family can also be given (e.g. "attributes+length"): then only it is fitted.

Pure numpy; texts are given as strings or as their term counts (a profile stores the counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import approximation
from ..errors import DriftError
from .features import Doc, bow_design, bow_word_weights, tfidf_transform, term_items

FAMILIES = ("attributes", "length", "lexical")
# Every combination of families, simplest first (what experiments and a given --family may fit).
CANDIDATES = (("attributes",), ("length",), ("lexical",), ("attributes", "length"), ("length", "lexical"),
              ("attributes", "lexical"), ("attributes", "length", "lexical"))
AUTO = "auto"
JOINT = FAMILIES   # what "auto" fits from MIN_PAIRS pairs with texts
MIN_PAIRS = 10     # below this the paper's attribute model alone
FOLDS, REPEATS, SEED = 5, 2, 0
Z95 = 1.959964


@dataclass(frozen=True)
class Priors:
    """l2 priors (on the summed loss) of the length and lexical columns in a joint fit, and the length
    weight's prior mean; the attributes' prior is the fit's own l2. Chosen by nested evaluation on
    development users, among priors that recover synthetic users of each family (see above)."""
    length: float = 5.0
    lexical: float = 5.0
    # Per e-fold of length, before any pair: a slight lean toward longer answers, as every development
    # user's train pool has (0.6-1.0 fitted alone). Stronger leans override users who prefer shorter.
    length_mean: float = 0.25


PRIORS = Priors()


def family_name(family: Sequence[str]) -> str:
    return "+".join(family)


def parse_family(text: str, name: str = "--family") -> tuple[str, ...]:
    """'auto', or families joined by '+' (e.g. 'attributes+length'), as a candidate in CANDIDATES' order."""
    if text == AUTO:
        return ()
    parts = tuple(text.split("+"))
    unknown = [p for p in parts if p not in FAMILIES]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise DriftError(f"{name}: unknown family '{text}' (auto, or some of {', '.join(FAMILIES)} joined by '+')")
    return tuple(f for f in FAMILIES if f in parts)


def length_feature(docs: Sequence[tuple[Doc, Doc]]) -> np.ndarray:
    """log(1 + words of chosen) - log(1 + words of rejected), one per pair."""
    words = np.array([[sum(c for _, c in term_items(d)) for d in pair] for pair in docs], dtype=np.float64)
    return np.log1p(words[:, 0]) - np.log1p(words[:, 1]) if len(docs) else np.zeros(0)


def length_target(docs: Sequence[tuple[Doc, Doc]], weight: float, beta: float) -> float:
    """The length decoding steers toward, in words: the median of the answers this person was shown (both
    sides of each pick: samples of what the LLM writes), each weighted by exp(weight * ln(1 + words) / beta),
    the KL-regularized tilt of that sample by the fitted length utility at strength 1/beta. 0: no answers."""
    words = np.array([sum(c for _, c in term_items(d)) for pair in docs for d in pair], dtype=np.float64)
    if not words.size:
        return 0.0
    order = np.argsort(words)
    logw = weight * np.log1p(words[order]) / beta
    cum = np.cumsum(np.exp(logw - logw.max()))
    return float(words[order][np.searchsorted(cum, cum[-1] / 2)])


@dataclass
class Model:
    """A fitted model over some families: margins are D . attributes + length * dlog + (tfidf diff) . words."""
    family: tuple[str, ...]
    attributes: Optional[np.ndarray] = None      # raw coefficients (unit norm when attributes alone)
    length: float = 0.0                          # per e-fold of the word count
    words: dict = field(default_factory=dict)    # word -> (idf, weight): the whole training vocabulary
    word_norm: float = 1.0                       # mean l2 norm of the training responses' tf-idf rows


@dataclass
class Choice:
    family: tuple[str, ...]
    reason: str
    n_pairs: int
    cv: dict          # candidate name -> {"accuracy", "se"}: cross-validated on the user's pairs
    model: Model
    shares: dict = field(default_factory=dict)  # family -> share of the fitted margins (see shares())

    @property
    def accuracy(self) -> Optional[float]:
        return self.cv.get(family_name(self.family), {}).get("accuracy")

    @property
    def interval(self) -> Optional[tuple[float, float]]:
        entry = self.cv.get(family_name(self.family))
        if not entry:
            return None
        a, se = entry["accuracy"], entry["se"]
        return max(0.0, a - Z95 * se), min(1.0, a + Z95 * se)


# ----------------------------------------------------------------------- fitting
def _design(family, D, docs_train, docs_test, Dt, l2, priors: Priors):
    """Joined columns of the families, each scaled by 1/sqrt(its l2) so that one l2 = 1 fit gives every
    family its own prior; returns (X, Xt, scales, offset, offset_t). The offsets are the margins of the
    length prior's mean: the fit estimates the length weight's departure from it."""
    blocks, blocks_t, scales = [], [], []
    offset, offset_t = np.zeros(D.shape[0]), np.zeros(Dt.shape[0])
    for f in family:
        if f == "attributes":
            X, Xt, lam = D, Dt, l2
        elif f == "length":
            X, Xt, lam = length_feature(docs_train)[:, None], length_feature(docs_test)[:, None], priors.length
            offset, offset_t = priors.length_mean * X[:, 0], priors.length_mean * Xt[:, 0]
        else:
            X, Xt = bow_design(docs_train, docs_test)
            lam = priors.lexical
        blocks.append(X / math.sqrt(lam))
        blocks_t.append(Xt / math.sqrt(lam))
        scales.append((1 / math.sqrt(lam), X.shape[1]))
    return np.hstack(blocks), np.hstack(blocks_t), scales, offset, offset_t


def _fit_margins(family, D, docs, Dt, docs_t, method, l2, priors: Priors) -> np.ndarray:
    """Test margins of `family` fitted on the training pairs."""
    if family == ("attributes",):  # the profile's own fit, so that the comparison is with what it decodes
        return Dt @ approximation.fit(D, np.zeros_like(D), method, l2)
    X, Xt, _, offset, offset_t = _design(family, D, docs, docs_t, Dt, l2, priors)
    if X.shape[1] == 0:
        return np.zeros(Xt.shape[0])
    return Xt @ approximation.bradley_terry_coefficients(X, 1.0, offset=offset) + offset_t


def fit(family: Sequence[str], W, L, docs: Optional[Sequence[tuple[Doc, Doc]]], method: str = approximation.DEFAULT_METHOD,
        l2: float = approximation.DEFAULT_L2, priors: Priors = PRIORS) -> Model:
    """The model of `family` on all the pairs, with weights in each family's own units."""
    family = tuple(family)
    D = np.asarray(W, dtype=np.float64) - np.asarray(L, dtype=np.float64)
    if family == ("attributes",):
        return Model(family, attributes=approximation.fit(W, L, method, l2))
    docs = list(docs)
    X, _, scales, offset, _ = _design(family, D, docs, docs[:0], D[:0], l2, priors)
    b = approximation.bradley_terry_coefficients(X, 1.0, offset=offset) if X.shape[1] else np.zeros(0)
    model, at = Model(family), 0
    for f, (scale, width) in zip(family, scales):
        part = b[at: at + width] * scale
        at += width
        if f == "attributes":
            model.attributes = part
        elif f == "length":
            model.length = priors.length_mean + float(part[0])
        else:
            vocab, idf, weights = bow_word_weights(docs, part) if width else ({}, np.zeros(0), np.zeros(0))
            model.words = {w: (float(idf[j]), float(weights[j])) for w, j in vocab.items()}
            all_docs = [d for pair in docs for d in pair]
            model.word_norm = _mean_tfidf_norm(all_docs, vocab, idf)
    return model


def _mean_tfidf_norm(docs, vocab, idf) -> float:
    """Mean l2 norm of the responses' tf-idf rows before normalization: what one occurrence of a word is divided by."""
    norms = [math.sqrt(sum(((1 + math.log(c)) * idf[vocab[t]]) ** 2 for t, c in term_items(d) if t in vocab))
             for d in docs]
    norms = [n for n in norms if n > 0]
    return float(np.mean(norms)) if norms else 1.0


def information(family: Sequence[str], W, L, docs, W_new, L_new, docs_new, l2: float = approximation.DEFAULT_L2,
                priors: Priors = PRIORS) -> np.ndarray:
    """What a pick on each new pair would teach the Bradley-Terry fit of `family` on the pairs (W, L, docs):
    the expected information about its weights, 1/2 log(1 + 2 s(1 - s) x' H^-1 x), where x is the new
    pair's row, s the fit's chance that the first answer wins and H the fit's precision (its Laplace
    approximation: the prior plus each pair's curvature, every pair counted both ways as the fit does).

    A pair the fit is unsure of (s near 1/2) teaches little when its answers hardly differ in the
    features (x near 0), and a pair with a large x teaches little when the fit already knows the
    winner: this weighs both, where the least-certain pair weighs only the first."""
    family = tuple(family)
    D = np.asarray(W, dtype=np.float64) - np.asarray(L, dtype=np.float64)
    Dt = np.asarray(W_new, dtype=np.float64) - np.asarray(L_new, dtype=np.float64)
    if family == ("attributes",):
        X, Xt, lam, offset, offset_t = D, Dt, l2, np.zeros(len(D)), np.zeros(len(Dt))
    else:  # columns scaled by their priors: one l2 = 1 is every family's prior
        X, Xt, _, offset, offset_t = _design(family, D, list(docs), list(docs_new), Dt, l2, priors)
        lam = 1.0
    b = approximation.bradley_terry_coefficients(X, lam, offset=offset)
    curvature = lambda z: 0.25 / np.cosh(0.5 * z) ** 2  # s(1 - s) of s = sigmoid(z), overflow-free  # noqa: E731
    H = 2 * (X.T * curvature(X @ b + offset)) @ X + lam * np.eye(X.shape[1])
    spread = np.einsum("ij,ij->i", Xt, np.linalg.solve(H, Xt.T).T)  # x' H^-1 x for each new pair
    return 0.5 * np.log1p(2 * curvature(Xt @ b + offset_t) * spread)


def contributions(model: Model, W, L, docs: Optional[Sequence[tuple[Doc, Doc]]]) -> dict[str, np.ndarray]:
    """Each family's part of the model's margin on each pair."""
    D = np.asarray(W, dtype=np.float64) - np.asarray(L, dtype=np.float64)
    if model.family != ("attributes",) and docs is None:
        raise DriftError(f"the {family_name(model.family)} model needs the responses' texts")
    out = {}
    if "attributes" in model.family:
        out["attributes"] = D @ model.attributes
    if "length" in model.family:
        out["length"] = model.length * length_feature(docs)
    if "lexical" in model.family:
        out["lexical"] = np.zeros(D.shape[0])
        if model.words:
            vocab = {w: j for j, w in enumerate(model.words)}
            idf = np.array([v[0] for v in model.words.values()])
            b = np.array([v[1] for v in model.words.values()])
            docs = list(docs)
            out["lexical"] = (tfidf_transform([c for c, _ in docs], vocab, idf)
                              - tfidf_transform([r for _, r in docs], vocab, idf)) @ b
    return out


def margins(model: Model, W, L, docs: Optional[Sequence[tuple[Doc, Doc]]]) -> np.ndarray:
    """The model's preference margin of each pair (> 0: the chosen one is predicted)."""
    return sum(contributions(model, W, L, docs).values(), np.zeros(np.shape(W)[0]))


def shares(model: Model, W, L, docs) -> dict[str, float]:
    """Each family's share of the model's mean |margin part| on these pairs. In-sample: what the family
    weighs in the model that decodes, not a held-out estimate (the families' cv accuracies are that)."""
    size = {f: float(np.abs(m).mean()) if m.size else 0.0 for f, m in contributions(model, W, L, docs).items()}
    total = sum(size.values())
    return {f: (v / total if total > 0 else 0.0) for f, v in size.items()}


# ----------------------------------------------------------------------- choosing
def _partition(n: int, groups, folds: int, rng) -> list[np.ndarray]:
    """`folds` random parts of range(n); with groups (e.g. the prompt of each pair), whole groups go to a
    part, so that no prompt or response is on both sides. Fewer than two groups: parts of pairs."""
    labels = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    if labels is None or labels.max() < 1:
        return np.array_split(rng.permutation(n), min(folds, n))
    group_parts = np.array_split(rng.permutation(labels.max() + 1), min(folds, labels.max() + 1))
    return [np.flatnonzero(np.isin(labels, part)) for part in group_parts]


def cross_validate(W, L, docs, candidates=CANDIDATES, method: str = approximation.DEFAULT_METHOD,
                   l2: float = approximation.DEFAULT_L2, folds: int = FOLDS, repeats: int = REPEATS,
                   seed: int = SEED, groups=None, priors: Priors = PRIORS) -> dict[tuple, np.ndarray]:
    """Per-pair held-out accuracy of each candidate (1, 0 or 0.5 for a tie), averaged over `repeats`
    random `folds`-fold partitions (by group when groups are given); every candidate sees the same ones."""
    D = np.asarray(W, dtype=np.float64) - np.asarray(L, dtype=np.float64)
    n = D.shape[0]
    if n < 2:
        raise DriftError("cross-validation needs at least 2 pairs")
    docs = None if docs is None else list(docs)
    acc = {c: np.zeros(n) for c in candidates}
    for r in range(repeats):
        for test in _partition(n, groups, folds, np.random.default_rng([seed, r])):
            train = np.setdiff1d(np.arange(n), test)
            dtr = None if docs is None else [docs[i] for i in train]
            dte = None if docs is None else [docs[i] for i in test]
            for c in candidates:
                m = _fit_margins(c, D[train], dtr, D[test], dte, method, l2, priors)
                acc[c][test] += ((m > 0) + 0.5 * (m == 0)) / repeats
    return acc


def choose(W, L, docs: Optional[Sequence[tuple[Doc, Doc]]], method: str = approximation.DEFAULT_METHOD,
           l2: float = approximation.DEFAULT_L2, family: Sequence[str] = (), groups=None) -> Choice:
    """The model for these pairs (the joint one, or the given `family`), fitted on all of them, with the
    cross-validated accuracy of it and of each family alone. groups: one label per pair (its prompt),
    so that cross-validation holds out whole prompts: pairs on one prompt share responses, and a
    held-out pair whose responses were trained on says little."""
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    fixed = tuple(family)
    attributes = ("attributes",)
    if fixed and docs is None and fixed != attributes:
        raise DriftError(f"the {family_name(fixed)} family needs the responses' texts, which this profile lacks")
    if fixed:
        chosen, reason = fixed, "given"
    elif docs is None:
        chosen, reason = attributes, "the profile holds no response texts, only attribute rewards"
    elif n < MIN_PAIRS:
        chosen, reason = attributes, f"fewer than {MIN_PAIRS} pairs: the paper's attribute model"
    else:
        chosen, reason = JOINT, "every family in one fit, each shrunk by its prior"
    singles = [attributes] if docs is None else [(f,) for f in FAMILIES]
    cv = {}
    if n >= 2:
        acc = cross_validate(W, L, docs, tuple(dict.fromkeys(singles + [chosen])), method, l2, groups=groups)
        cv = {family_name(c): {"accuracy": float(a.mean()), "se": float(a.std(ddof=1) / math.sqrt(n))}
              for c, a in acc.items()}
    model = fit(chosen, W, L, docs, method, l2)
    return Choice(chosen, reason, n, cv, model, shares(model, W, L, docs))


def word_rewards(model: Model, n: int) -> list[tuple[str, float]]:
    """The n words of largest |weight|, each with the reward of one occurrence in a response of typical
    length (weight * idf / the mean tf-idf norm): the per-token bias decoding gives the word's tokens."""
    rewards = [(w, weight * idf / model.word_norm) for w, (idf, weight) in model.words.items()]
    return sorted(rewards, key=lambda x: -abs(x[1]))[:n]


def explain(c: Choice, attributes: Sequence[tuple[str, float]], words: Sequence[tuple[str, float]]) -> list[str]:
    """The model in words, its strongest family first. attributes: (name, p) of the attributes that
    decode, strongest first; words: (word, reward) of the lexical family's strongest words."""
    name = family_name(c.family)
    lines = [f"model: {name} ({c.reason})"]
    if c.accuracy is not None:
        lo, hi = c.interval
        others = ", ".join(f"{k} alone {v['accuracy']:.2f}" for k, v in c.cv.items() if k != name)
        lines.append(f"cross-validated accuracy on your {c.n_pairs} pairs: {c.accuracy:.2f} "
                     f"(95% interval {lo:.2f}-{hi:.2f})" + (f"; {others}" if others else ""))
    order = sorted(c.family, key=lambda f: -c.shares.get(f, 0.0))
    if len(c.shares) > 1:
        lines.append("share of the margins on your pairs: " + ", ".join(f"{f} {c.shares[f]:.0%}" for f in order))
    likes = []
    for f in order:
        if f == "length":
            likes.append(f"{'longer' if c.model.length > 0 else 'shorter'} answers "
                         f"(weight {c.model.length:+.2f} per e-fold of length)")
        elif f == "attributes":
            likes += [f"{'more' if p > 0 else 'less'} {a.lower()} ones (p {p:+.2f})" for a, p in attributes[:3]]
    if likes:
        lines.append("you prefer " + (", ".join(likes[:-1]) + " and " + likes[-1] if len(likes) > 1 else likes[0]))
    if "lexical" in c.family:
        favour = [w for w, r in words if r > 0][:6]
        avoid = [w for w, r in words if r < 0][:6]
        lines.append(f"words you favour: {', '.join(favour) or '-'}; words you avoid: {', '.join(avoid) or '-'}")
    return lines
