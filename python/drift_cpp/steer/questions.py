"""Questions that teach: the two answers a learning chat shows, the pick recorded, and when to stop asking.

How the two candidates are made decides what a pick teaches. The strategies:

    personalized  the profile's answer against plain decoding (chat's first way)
    samples       two plain samples (seeds s and s + 1)
    betas         the profile at beta / 2 against beta * 2: more and less of what was learned
    active        k plain samples, scored under the profile's attributes (the scorer gives each
                  candidate's rewards), and the two on which the profile is least sure, |margin|
                  smallest; the scores are cached, so recording the pick scores nothing again
    informative   the same k samples, and the two whose pick would teach the profile most: the
                  largest expected information about its weights (fit/choice.information)

Every strategy shows two plain samples while the profile does not steer yet (under
MIN_PROFILE_PAIRS pairs), as chat always did. Which is the default, and why:
docs/results.md, "Learning from picks, end to end".

A Learner is what chat's --learn and /ab, and experiments/learning_loop.py, drive: ask, then
record the pick into the profile's pairs file (fit/learning.add), then know whether the profile
has settled (fit/learning.change between successive fits).
"""

from __future__ import annotations

import dataclasses
import itertools
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import DriftError
from ..fit import approximation, choice, learning, screening
from ..fit.profile import FitOptions, Profile, pair_bows, reward_features
from ..params import ACTIVE_CANDIDATES, DEFAULT_QUESTIONS, QUESTIONS as STRATEGIES, SETTLE_PICKS, SETTLE_TOL, Sampling
from ..preferences import PreferencePair, pair_from
from ..score.attributes import AttributeSet
from ..score.scorer import Scorer
from .formula import Formula
from .session import Drift, Generation

CHOOSING = ("active", "informative")  # strategies that choose two of k samples by the profile


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise DriftError(f"unknown question strategy '{strategy}' (choose from {', '.join(STRATEGIES)})")
    return strategy


def steering(formula: Formula) -> bool:
    """Whether a formula personalizes: attribute terms, or the length and word biases alone."""
    return bool(formula.steering or formula.eos or formula.words)


@dataclass
class Question:
    history: list[dict]         # the conversation with the user's new turn last
    answers: tuple[str, str]
    titles: tuple[str, str]
    strategy: str               # how the two were made ("samples" while nothing steers)
    margin: Optional[float] = None  # active: the profile's margin for answer 1 over answer 2
    ended: tuple[bool, bool] = (True, True)  # False: the answer was cut at max_tokens

    def pair(self, pick: int) -> Optional[PreferencePair]:
        """The pick (1 or 2) as a preference pair; None when the two answers are the same."""
        if pick not in (1, 2):
            raise DriftError(f"a pick is 1 or 2, got {pick!r}")
        if self.answers[0].strip() == self.answers[1].strip():
            return None
        chosen, rejected = self.answers[pick - 1], self.answers[2 - pick]
        return pair_from({"prompt": self.history, "chosen": chosen, "rejected": rejected}, "pick")


def _samples(drift: Drift, history: list[dict], sampling: Sampling, n: int) -> list[Generation]:
    """n plain samples, seeds sampling.seed, +1, ...: the session's own slot where it decodes plain."""
    make = drift.generate if not steering(drift.formula) else drift.generate_plain
    return [make(history, dataclasses.replace(sampling, seed=(sampling.seed + i) % 2**32)) for i in range(n)]


def _question(history: list[dict], two: Sequence[Generation], titles: tuple[str, str], strategy: str,
              margin: Optional[float] = None) -> Question:
    return Question(history, (two[0].text, two[1].text), titles, strategy, margin,
                    (two[0].finish_reason != "length", two[1].finish_reason != "length"))


def judge_candidates(profile: Profile, candidates: Sequence[str], history: list[dict],
                     scorer: Scorer) -> dict[tuple[int, int], tuple[float, float]]:
    """For every two distinct candidates i < j: the profile's margin of i over j, and what a pick between
    them would teach it (choice.information).

    Each candidate is scored under the columns the profile's next pair would be scored under (all of
    them for an exhaustive profile), so the pair then recorded reads its rewards from the cache; an
    attribute not scored counts as no difference."""
    distinct = [(i, j) for i, j in itertools.combinations(range(len(candidates)), 2)
                if candidates[i].strip() != candidates[j].strip() and candidates[i].strip() and candidates[j].strip()]
    if not distinct:
        return {}
    pairs = [pair_from({"prompt": history, "chosen": candidates[i], "rejected": candidates[j]}, "candidate")
             for i, j in distinct]
    o, attrs = profile.options, profile.attributes
    columns = None
    if profile.screen is not None:
        cols = screening.block_columns(profile.W, profile.L, profile.n_pairs, 1, o.top, profile.screen,
                                       lambda W, L: approximation.fit(W, L, o.method, o.l2))[0]
        columns = [cols] * len(pairs)
    with scorer.truncating(o.max_response_tokens):
        W, L = reward_features(scorer, pairs, attrs.base, attrs.attributes, o.normalize, columns)
    D, zeros, bows = np.nan_to_num(W - L, nan=0.0), np.zeros((len(pairs), W.shape[1])), pair_bows(pairs)
    if profile.choice is None:
        m = approximation.predict(profile.p, D, zeros)
    else:
        m = choice.margins(profile.choice.model, D, zeros, bows)
    # What a pick teaches the model the profile is heading for (the joint one, from the texts), not only the one
    # it decodes with now: under the attributes alone (its first picks) a length taste is invisible, and the
    # questions chosen by them taught the fit nothing about length (docs/results.md, "Learning from picks").
    taught = choice.parse_family(o.family) or (choice.JOINT if profile.bows is not None else ("attributes",))
    W_fit, L_fit = screening.impute(profile.W, profile.L)
    info = choice.information(taught, W_fit, L_fit, profile.bows, D, zeros, bows, o.l2)
    return {ij: (float(x), float(i)) for ij, x, i in zip(distinct, m, info)}


def ask(strategy: str, drift: Drift, history: list[dict], sampling: Sampling,
        profile: Optional[Profile] = None, scorer: Optional[Scorer] = None, k: int = ACTIVE_CANDIDATES) -> Question:
    """Two answers to the conversation `history` (its last turn the user's), made by `strategy`.

    The session needs compare=True (plain decoding beside its formula) once its formula steers.
    active and informative need the profile and the scorer; without a profile they show the first two samples."""
    check_strategy(strategy)
    if strategy == "samples" or (strategy not in CHOOSING and not steering(drift.formula)):
        return _question(history, _samples(drift, history, sampling, 2), ("1", "2"), "samples")
    if strategy == "personalized":
        return _question(history, drift.generate_all(history, sampling), ("1: personalized", "2: plain"), strategy)
    if strategy == "betas":
        beta, answers = drift.beta, []
        try:
            for b in (beta / 2, beta * 2):
                drift.beta = b
                answers.append(drift.generate(history, sampling))
        finally:
            drift.beta = beta
        return _question(history, answers, (f"1: beta {beta / 2:g}", f"2: beta {beta * 2:g}"), strategy)
    # active, informative: k samples, two of them chosen by the profile
    learned = profile is not None and profile.n_pairs > 0
    candidates = _samples(drift, history, sampling, k if learned else 2)
    judged = judge_candidates(profile, [c.text for c in candidates], history, scorer) if learned else {}
    if not judged:
        return _question(history, candidates[:2], ("1", "2"), "samples")
    if strategy == "active":  # the least certain
        (i, j), (m, _) = min(judged.items(), key=lambda item: abs(item[1][0]))
    else:  # the most informative
        (i, j), (m, _) = max(judged.items(), key=lambda item: item[1][1])
    return _question(history, (candidates[i], candidates[j]), ("1", "2"), strategy, m)


class Learner:
    """Learning into the profile at `target` from picks: ask, record, undo, and whether it has settled.

    `scorer` makes the scorer on first need (loading it costs seconds). The convergence record holds
    this session's picks only: a chat resumed on an old profile settles after SETTLE_PICKS new ones.

    Scoring a pick takes seconds on a laptop (the sLM reads both answers under every attribute's
    prompt), so chat records it in two steps: save_pick keeps it in the pairs file at once, and a
    worker thread learns it while the person reads and types; learned() waits for that. Every other
    call waits for it first, so the scorer and the files are only ever used by one thread at a time.
    """

    def __init__(self, target: Path, scorer: Callable[[], Scorer], attributes: AttributeSet,
                 strategy: str = DEFAULT_QUESTIONS, options: FitOptions = FitOptions(), k: int = ACTIVE_CANDIDATES):
        self.target, self.attributes, self.options, self.k = Path(target), attributes, options, k
        self.strategy = check_strategy(strategy)
        self._make_scorer, self._scorer = scorer, None
        self.changes: list[tuple[int, Optional[float]]] = []  # (pairs after the pick, change made by it)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="drift-cpp-learn")
        self._pending: Optional[Future] = None

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self._make_scorer()
        return self._scorer

    def ready(self) -> Optional[Profile]:
        """The profile (None: not yet), once it, its pairs file and its folder can take a pick; loads the scorer."""
        self.learned()
        profile, _ = learning.check(self.target)
        self.scorer
        return profile

    def ask(self, drift: Drift, history: list[dict], sampling: Sampling) -> Question:
        profile = self.ready()  # a fault found after the answers would lose the pick
        return ask(self.strategy, drift, history, sampling, profile, self.scorer, self.k)

    def record(self, question: Question, pick: int) -> Optional[learning.Update]:
        """The pick learned (None: the two answers were the same, nothing to learn)."""
        self.learned()
        pair = question.pair(pick)
        return None if pair is None else self._learn([pair])

    def save_pick(self, question: Question, pick: int) -> bool:
        """The pick kept in the pairs file now and learned in the background (False: the two answers were
        the same, or the pair is known already: nothing to learn). learned() gives its Update."""
        self.learned()
        pair = question.pair(pick)
        if pair is None or not learning.save(self.target, [pair], self.scorer, self.attributes, self.options):
            return False
        self._pending = self._worker.submit(self._learn, [])  # add() learns what the pairs file holds
        return True

    def learned(self) -> Optional[learning.Update]:
        """Waits for the pick being learned in the background, if any, and gives its Update (or raises its
        error: the pick stays in the pairs file, and the next pick's add learns it)."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def _learn(self, pairs: list[PreferencePair]) -> learning.Update:
        before = learning.load(self.target)
        update = learning.add(self.target, pairs, self.scorer, self.attributes, self.options)
        if update.changed:
            self.changes.append((update.profile.n_pairs, learning.change(before, update.profile)))
        return update

    def undo(self) -> learning.Update:
        self.learned()
        update = learning.undo(self.target)
        n = update.profile.n_pairs if update.profile else 0
        self.changes = [c for c in self.changes if c[0] <= n]
        return update

    def settled(self) -> Optional[int]:
        """The pairs after which the profile settled: the last SETTLE_PICKS picks each moved its predictions
        on the earlier pairs by less than SETTLE_TOL, from the joint model on (fit/choice.MIN_PAIRS);
        None while it still moves."""
        recent = self.changes[-SETTLE_PICKS:]
        if len(recent) < SETTLE_PICKS or recent[0][0] <= choice.MIN_PAIRS:
            return None
        return recent[-1][0] if all(c is not None and c < SETTLE_TOL for _, c in recent) else None
