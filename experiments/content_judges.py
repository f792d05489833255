"""Judges that read content, not form (issue 19): facts kept, loops, echoes, fluency and a model judge.

The form judges of generation_judges.py (length, '!', lists, plain words) can prefer an answer
that is worse in substance: `Boil an egg: "Boil an egg"` is short. These judges say whether a
steered answer still answers:

  facts    fact_recall: the share of a factual prompt's required word groups (fact_prompts.py,
           written before any run) that the answer contains.
  loop     the answer repeats itself: from 12 words on, 30% or more of its word 4-grams repeat an
           earlier one; or a unit of 1-8 words 4 or more times back to back ("Boil an egg: Boil an
           egg: ..."); or a unit of 1-4 characters with a letter or digit 8 or more times in a row
           ("akakakakakakakak"). Calibrated on the 1,550 answers stored under docs/results: no plain
           held-out answer loops by it (a plain 320-token answer with "to meet new people" three
           times does not), and every answer read there as a loop does.
  echo     the answer restates the prompt instead of answering it: it has no content word (a
           word outside STOPWORDS) that the prompt lacks, or at least half of its words are the
           prompt's and it repeats one of the prompt's word trigrams.
  fluency  nll_per_token: the answer's negative log-likelihood per token under the plain LLM,
           with the base system prompt (the unsteered model's own view of the text).
  model    model_judge: a model asked which of two answers is more correct and helpful, in both
           orders, by comparing the log-probabilities of the replies "1" and "2". A win needs both
           orders to agree; the position bias is how often it picks the answer shown first; the
           debiased win rate counts a win where the log-odds for an answer, averaged over the two
           orders, favour it (a constant pull toward a position cancels).

Words here are lower-case runs of letters and digits ("H2O" is one word, "100°C" two).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from fact_prompts import FACT_GROUPS

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------- facts
def _stem_matches(stem: str, word: str) -> bool:
    return word == stem[:-1] if stem.endswith("$") else word.startswith(stem)


def _alternative_in(alternative: str, ws: Sequence[str]) -> bool:
    stems = alternative.split()
    n = len(stems)
    return any(all(_stem_matches(s, w) for s, w in zip(stems, ws[i:i + n])) for i in range(len(ws) - n + 1))


def facts_kept(text: str, groups) -> list[bool]:
    """For each required group, whether the answer contains one of its alternatives."""
    ws = words(text)
    return [any(_alternative_in(alt, ws) for alt in group) for group in groups]


def fact_recall(text: str, prompt: str) -> float:
    """The share of the prompt's required groups the answer keeps (fact_prompts.FACTS)."""
    kept = facts_kept(text, FACT_GROUPS[prompt])
    return sum(kept) / len(kept)


# --------------------------------------------------------------------------- loops and echoes
LOOP_SHARE, LOOP_MIN_WORDS = 0.3, 12  # from 12 words: 30% or more of the word 4-grams repeat an earlier one
LOOP_TANDEM, LOOP_UNIT = 4, 8          # a unit of 1-8 words 4 or more times back to back
_CHAR_RUN = re.compile(r"(\S{1,4}?)\1{7,}")  # a unit of 1-4 characters, 8 or more times in a row
ECHO_SHARE = 0.5                       # with a repeated prompt trigram: at least half the words the prompt's

# Function words: they do not answer anything, so an answer made of the prompt's words and these echoes it.
STOPWORDS = frozenset("""
a an the and or but so if then than that this these those there here it its it's is are was were be been being
am do does did done doing have has had having i me my mine you your yours he him his she her hers we us our
they them their what which who whom whose when where why how to of in on at by for with from into onto about as
up down out over under again once not no yes can could will would shall should may might must just very too also
s t ll re ve d m let lets let's ok okay well oh here's there's
""".split())


def _ngrams(ws: Sequence[str], n: int) -> list[tuple]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def repeated_share(ws: Sequence[str], n: int = 4) -> float:
    """The share of the word n-grams that repeat an earlier one."""
    grams, seen, repeats = _ngrams(ws, n), set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else 0.0


def tandem_repeat(ws: Sequence[str]) -> Optional[tuple[str, int]]:
    """The longest run of a unit of 1-8 words repeated LOOP_TANDEM or more times back to back: (unit, copies)."""
    best = None
    for n in range(1, LOOP_UNIT + 1):
        i = 0
        while i + n <= len(ws):
            k = 1
            while ws[i + k * n:i + (k + 1) * n] == ws[i:i + n]:
                k += 1
            if k >= LOOP_TANDEM and (best is None or k * n > best[1] * len(best[0].split())):
                best = (" ".join(ws[i:i + n]), k)
            i += max(1, (k - 1) * n) if k > 1 else 1
    return best


def loop_reason(text: str) -> Optional[str]:
    """Why the answer counts as a loop, or None."""
    ws = words(text)
    if len(ws) >= LOOP_MIN_WORDS and (share := repeated_share(ws)) >= LOOP_SHARE:
        return f"{share:.0%} of the word 4-grams repeat an earlier one"
    if tandem := tandem_repeat(ws):
        return f"{tandem[0]!r} {tandem[1]} times in a row"
    for m in _CHAR_RUN.finditer(text.lower()):
        if re.search(r"[a-z0-9]", m.group(1)):
            return f"{m.group(1)!r} {len(m.group(0)) // len(m.group(1))} times in a row"
    return None


def loops(text: str) -> bool:
    return loop_reason(text) is not None


def echo_reason(text: str, prompt: str) -> Optional[str]:
    """Why the answer counts as an echo of the prompt, or None. An empty answer is not an echo (see `empty`)."""
    ws, ps = words(text), words(prompt)
    if not ws:
        return None
    prompt_words = set(ps)
    new = [w for w in ws if w not in prompt_words and w not in STOPWORDS]
    if not new:
        return "no content word beyond the prompt's"
    share = sum(w in prompt_words for w in ws) / len(ws)
    prompt_tri = set(_ngrams(ps, 3))
    repeated = [g for g, c in Counter(g for g in _ngrams(ws, 3) if g in prompt_tri).items() if c >= 2]
    if share >= ECHO_SHARE and repeated:
        return f"{share:.0%} prompt words, {' '.join(repeated[0])!r} repeated"
    return None


def echoes(text: str, prompt: str) -> bool:
    return echo_reason(text, prompt) is not None


def empty(text: str) -> bool:
    return not words(text)


def degenerate(text: str, prompt: str) -> bool:
    """A loop, an echo, or no words at all."""
    return empty(text) or loops(text) or echoes(text, prompt)


# --------------------------------------------------------------------------- fluency
class Fluency:
    """NLL per token of answers under the plain LLM with the base system prompt; results are memoized."""

    def __init__(self, model, system: Optional[str] = None):
        from drift_cpp.steer.formula import default_system
        from drift_cpp.score.scorer import Scorer

        self.scorer = Scorer(model, cache=None, max_response_tokens=0)
        self.system = system or default_system()
        self._memo: dict[tuple[str, str], Optional[float]] = {}

    def nll_per_token(self, prompt: str, text: str) -> Optional[float]:
        """None for an answer without tokens to score (empty or whitespace)."""
        from drift_cpp.score.scorer import ScoreRequest

        key = (prompt, text)
        if key not in self._memo:
            if not text.strip():
                self._memo[key] = None
            else:
                tokens, lp = self.scorer.token_logprobs(ScoreRequest(self.system, (("user", prompt),), text))
                self._memo[key] = float(-lp.sum() / len(tokens)) if len(tokens) else None
        return self._memo[key]


# --------------------------------------------------------------------------- model judge
JUDGE_SYSTEM = "You are a careful and fair judge of answers to questions."
JUDGE_TEMPLATE = ("Question: {question}\n\nAnswer 1: {first}\n\nAnswer 2: {second}\n\n"
                  "Which answer is more correct and helpful? Reply with 1 or 2.")
JUDGE_WORDS = 150  # each answer is shown up to its first 150 words, so that two fit the context
JUDGE_EMPTY = "(no answer)"


def _shown(text: str) -> str:
    ws = text.split()
    shown = " ".join(ws[:JUDGE_WORDS]) + (" ..." if len(ws) > JUDGE_WORDS else "")
    return shown or JUDGE_EMPTY


@dataclass
class Verdict:
    """The judge on answer a against answer b, asked in both orders."""
    margin_ab: float   # log p("1") - log p("2") with a shown first
    margin_ba: float   # the same with b shown first

    @property
    def first_picked(self) -> tuple[bool, bool]:
        """Whether the judge picked the first position, in each order."""
        return self.margin_ab > 0, self.margin_ba > 0

    @property
    def outcome(self) -> float:
        """1 if a is preferred in both orders, 0 if b is, 0.5 when the orders disagree."""
        a_first, b_first = self.first_picked
        return (float(a_first) + float(not b_first)) / 2

    @property
    def debiased(self) -> float:
        """The log-odds for a averaged over the two orders, which cancels a constant pull to either position."""
        return (self.margin_ab - self.margin_ba) / 2


class ModelJudge:
    """Which of two answers a model finds more correct and helpful, by the log-probabilities of "1" and "2"."""

    def __init__(self, model, cache=None):
        from drift_cpp.score.scorer import Scorer

        self.scorer = Scorer(model, cache=cache, max_response_tokens=0)
        self.model = model

    def _margin(self, question: str, first: str, second: str) -> float:
        from drift_cpp.score.scorer import ScoreRequest

        user = JUDGE_TEMPLATE.format(question=question, first=_shown(first), second=_shown(second))
        reqs = [ScoreRequest(JUDGE_SYSTEM, (("user", user),), r) for r in ("1", "2")]
        s = self.scorer.score(reqs, "judging")
        return float(s.logprob[0] - s.logprob[1])

    def compare(self, question: str, a: str, b: str) -> Verdict:
        return Verdict(self._margin(question, a, b), self._margin(question, b, a))


def judge_summary(verdicts: Sequence[Verdict]) -> dict:
    """Win rate of a over b (both orders agreeing: 1 or 0, else 0.5) and the judge's position bias."""
    if not verdicts:
        return {"n": 0, "win_rate": None, "first_position_rate": None, "consistent": None}
    firsts = [f for v in verdicts for f in v.first_picked]
    return {"n": len(verdicts), "win_rate": sum(v.outcome for v in verdicts) / len(verdicts),
            "first_position_rate": sum(firsts) / len(firsts),
            "consistent": sum(v.outcome != 0.5 for v in verdicts) / len(verdicts),
            "debiased_win_rate": sum(1.0 if v.debiased > 0 else 0.0 if v.debiased < 0 else 0.5
                                     for v in verdicts) / len(verdicts),
            "margins": [[v.margin_ab, v.margin_ba] for v in verdicts]}


# --------------------------------------------------------------------------- summaries
def content_summary(prompts: Sequence[str], steered: Sequence[str], plain: Sequence[str],
                    fluency: Optional[Fluency] = None) -> dict:
    """Facts (on the prompts that have required words), loops, echoes and NLL, steered against plain."""
    out: dict = {"n": len(prompts)}
    factual = [i for i, q in enumerate(prompts) if q in FACT_GROUPS]
    if factual:
        rs = [fact_recall(steered[i], prompts[i]) for i in factual]
        rp = [fact_recall(plain[i], prompts[i]) for i in factual]
        out["facts"] = {"n": len(factual), "recall": sum(rs) / len(rs), "recall_plain": sum(rp) / len(rp),
                        "ratio": (sum(rs) / sum(rp)) if sum(rp) else None,
                        "lost": sum(s < p for s, p in zip(rs, rp)), "gained": sum(s > p for s, p in zip(rs, rp))}
    for name, texts in (("steered", steered), ("plain", plain)):
        out[f"loops_{name}"] = sum(loops(t) for t in texts)
        out[f"echoes_{name}"] = sum(echoes(t, q) for t, q in zip(texts, prompts))
        out[f"empty_{name}"] = sum(empty(t) for t in texts)
        out[f"degenerate_{name}"] = sum(degenerate(t, q) for t, q in zip(texts, prompts))
    if fluency is not None:
        ns = [fluency.nll_per_token(q, t) for q, t in zip(prompts, steered)]
        np_ = [fluency.nll_per_token(q, t) for q, t in zip(prompts, plain)]
        ns_, np__ = [x for x in ns if x is not None], [x for x in np_ if x is not None]
        out["nll"] = sum(ns_) / len(ns_) if ns_ else None
        out["nll_plain"] = sum(np__) / len(np__) if np__ else None
        out["nll_ratio"] = out["nll"] / out["nll_plain"] if ns_ and np__ and out["nll_plain"] > 0 else None
        out["nll_per_answer"] = ns
    return out


def _fmt(x, spec=".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)
