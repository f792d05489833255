#!/usr/bin/env python
"""Personalized generation with verifiable judges (the paper's section 4.3, on a laptop).

The paper judges personalized generations with a Gold RM and GPT-4. Those are out of reach
here, so each persona's preference is a transparent, deterministic function of the text
(a "judge": text -> score, higher preferred):

  short        fewer words (whitespace-separated); an answer cut at max_tokens counts as
               longer than any answer that ended, and two cut answers tie, as neither's
               length is known
  exclaim      more '!' per sentence
  lists        more numbered / bulleted list lines
  plain_words  shorter mean word length (letters only)

Protocol (nothing is tuned on the held-out prompts; every setting below is fixed in code):
  * PROMPTS is a fixed list of 60 everyday prompts; every third one (index % 3 == 2) is
    held out, the other 40 are training prompts.
  * Training data: two answers per training prompt (four in the `terms` size, every two of them
    a pair) from the embedded model with plain decoding (temperature 1.0, top-p 0.9, one seed
    per answer). The same answers serve every persona; each persona's judge labels each pair
    (ties and pairs with an empty answer are skipped).
  * A profile is fitted per persona (Drift Approximation, qp, sum normalization, top 7)
    with the attributes of the size; answers are scored on their first score_tokens tokens.
    The fit chooses the user's model family (choice.py): the attributes, the length (decoded
    as an end-of-generation bias) or words (per-token biases), or a combination.
  * On the held-out prompts plain decoding and Drift decoding use the same sampler and the
    same seed per prompt. The judge compares the two answers: win 1, tie 0.5, loss 0. The win
    rate of Drift over plain is reported at beta 0.5 (the paper's default), for the profile
    negated (expected < 0.5), and over a beta sweep. The plain answers are shared by every
    persona and configuration.

Outputs under --out: results.json, results.md (tables, the exact command, git rev) and,
where matplotlib is importable, generation_win_rates.png under --img (default: --out).
Interrupted runs resume: scores go to the score cache as they are computed, and every
generation is appended to generations.jsonl in the output folder, keyed by everything that
determines it.

    python experiments/generation_judges.py --size smoke --out /tmp/gen-smoke --threads 1   # ~1 min
    python experiments/generation_judges.py --size full --threads 1 \
        --out docs/results/generation_judges --img docs/img                                # ~1.5 h on 2 cores

On a machine whose cores are busy with other work, --threads 1 is far faster than one thread
per core (measured on a shared 2-core machine: plain decoding 50 vs 1-4 tokens/s, Drift 6 vs
~1 tokens/s, smoke 34 s vs 6.5 min); the answers are the same either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from drift_cpp.fit import choice
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.demo import DEMO_ATTRIBUTES
from drift_cpp.errors import DriftError
from drift_cpp.preferences import Message, PreferencePair
from drift_cpp.progress import TokenProgress
from run_info import REPO, command_line, git_rev, log, run, write_results

# ---------------------------------------------------------------------------- judges
class Answer(NamedTuple):
    text: str
    ended: bool = True  # False when generation was cut at max_tokens


_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # a run of letters, with inner apostrophes
_SENTENCE_SPLIT = re.compile(r"[.!?]+|\n+")
_LIST_LINE = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•+])\s+\S", re.MULTILINE)


def n_words(text: str) -> int:
    return len(text.split())


def n_sentences(text: str) -> int:
    """Segments between '.', '!', '?' runs and line breaks that hold a letter or digit."""
    return sum(1 for s in _SENTENCE_SPLIT.split(text) if re.search(r"[^\W_]", s))


def n_list_lines(text: str) -> int:
    """Lines that start (after spaces) with '1.', '2)', '-', '*', '•' or '+' and a space."""
    return len(_LIST_LINE.findall(text))


def mean_word_length(text: str) -> Optional[float]:
    words = _WORD.findall(text)
    return sum(len(w) for w in words) / len(words) if words else None


def judge_short(a: Answer) -> float:
    """Fewer words is better. A cut answer is at least max_tokens long, so it loses to any answer
    that ended (which is shorter in tokens) and ties with another cut one."""
    return -float(n_words(a.text)) if a.ended else -math.inf


def judge_exclaim(a: Answer) -> float:
    """More '!' per sentence is better (a text with no sentence counts as one)."""
    return a.text.count("!") / max(1, n_sentences(a.text))


def judge_lists(a: Answer) -> float:
    """More list lines is better."""
    return float(n_list_lines(a.text))


def judge_plain_words(a: Answer) -> float:
    """A shorter mean word length is better; a text without words is the worst."""
    m = mean_word_length(a.text)
    return -math.inf if m is None else -m


JUDGES: dict[str, Callable[[Answer], float]] = {
    "short": judge_short,
    "exclaim": judge_exclaim,
    "lists": judge_lists,
    "plain_words": judge_plain_words,
}
JUDGE_DESCRIPTIONS = {
    "short": "fewer whitespace-separated words; a cut answer loses to one that ended, two cut ones tie",
    "exclaim": "more '!' per sentence (sentences split at . ! ? and line breaks)",
    "lists": "more lines starting with '1.', '1)', '-', '*', '•' or '+'",
    "plain_words": "shorter mean word length (letters only; no words is worst)",
}
TIE_TOLERANCE = 1e-9


def compare(judge: Callable[[Answer], float], a: Answer, b: Answer) -> float:
    """1 if the judge prefers a, 0 if it prefers b, 0.5 on a tie."""
    sa, sb = judge(a), judge(b)
    if sa == sb or abs(sa - sb) <= TIE_TOLERANCE:
        return 0.5
    return 1.0 if sa > sb else 0.0


# ---------------------------------------------------------------------------- prompts
# Sixty everyday prompts, written for this experiment. Index % 3 == 2 is held out.
PROMPTS = (
    "What should I pack for a weekend beach trip?",
    "Write a short birthday message for my best friend.",
    "How do I boil an egg?",
    "Give me some tips for sleeping better.",
    "My team just won the championship! Say something to celebrate.",
    "Explain why the sky is blue.",
    "What are good habits for saving money?",
    "Write a thank-you note to my neighbor who watered my plants.",
    "How can I make my morning routine faster?",
    "What is the difference between weather and climate?",
    "Suggest a few fun things to do on a rainy afternoon.",
    "How do I politely decline a meeting invitation?",
    "Describe a perfect autumn day.",
    "What should I know before adopting a cat?",
    "Congratulate my sister on getting her driver's license.",
    "How does a refrigerator keep food cold?",
    "Give me ideas for a quick vegetarian dinner.",
    "How do I start learning to play the guitar?",
    "Write a cheerful good-morning text for my family group chat.",
    "Why do leaves change color in the fall?",
    "What are the steps to change a flat bicycle tire?",
    "How can I stay focused while studying at home?",
    "Tell me something encouraging before my job interview.",
    "What is a good way to organize a small closet?",
    "Explain how a rainbow forms.",
    "What should I bring to a picnic in the park?",
    "How do I write a good cover letter?",
    "Write a welcome message for a new coworker.",
    "How can I reduce plastic waste at home?",
    "What makes bread rise?",
    "Recommend some easy houseplants for beginners.",
    "How do I keep my phone battery healthy?",
    "Cheer me up, I had a long day at work.",
    "How do I make a cup of tea properly?",
    "What are some good stretches after running?",
    "Explain what a budget is to a teenager.",
    "Plan a simple birthday party for a seven-year-old.",
    "How do I clean a cast iron pan?",
    "Write an excited announcement that our bakery opens on Saturday.",
    "Why do we need to drink water every day?",
    "What are some tips for a long car ride with kids?",
    "How do I remember people's names better?",
    "Write a short message inviting friends to a barbecue.",
    "How do bees make honey?",
    "What should I do to prepare for a hiking trip?",
    "How can I be more productive in the afternoon?",
    "Say something nice to a friend who just finished a marathon.",
    "What is the best way to learn new vocabulary in a foreign language?",
    "Give me a checklist for moving to a new apartment.",
    "How do I fix a squeaky door?",
    "Write a happy note for my grandmother's eightieth birthday.",
    "What causes thunder?",
    "Suggest some healthy snacks for the office.",
    "How can I make new friends in a new city?",
    "Write a fun message announcing that summer holidays have started.",
    "How does recycling paper work?",
    "What are some ways to relax before bed?",
    "How do I water a cactus?",
    "Hype me up for my first day at a new school!",
    "Why is exercise good for the brain?",
)
TRAIN_PROMPTS = tuple(p for i, p in enumerate(PROMPTS) if i % 3 != 2)    # 40
HELD_OUT_PROMPTS = tuple(p for i, p in enumerate(PROMPTS) if i % 3 == 2)  # 20

# ---------------------------------------------------------------------------- settings
PERSONAS = tuple(JUDGES)
MAIN_BETA = 0.5            # the paper's default; the negated profile is run at this beta
TEMPERATURE, TOP_P = 1.0, 0.9
TRAIN_SEEDS = (1, 2, 3, 4)  # training answer s of prompt i uses seed 1000 * s + i; a size uses the first `answers`
EVAL_SEED_BASE = 5000      # held-out prompt i: seed 5000 + i for plain and Drift alike
TOP = 7                    # attributes that steer decoding (paper: 7)

# Six attributes chosen a priori from the persona definitions (not from any result), for smoke.
SMOKE_ATTRIBUTES = ("concise", "exclamatory", "easy", "energy", "formal", "analytic")
PAIR_ATTRIBUTES = DEMO_ATTRIBUTES  # the demo's 14 style attributes, for the pair size
# In-context learning baseline: the user's labelled pairs as examples in the LLM's system prompt.
ICL_N_CTX = 8192
ICL_INTRO = ("You are an AI assistant. This user compared pairs of answers and said which one they prefer. "
             "Answer the way this user prefers.")

# SmolLM2-135M rambles at temperature 1: in a probe of 12 training prompts with a 320-token cap,
# 4 answers ended (56, 134, 154, 206 tokens) and 8 were cut. A longer cap is too slow for the
# Drift runs, so answers are cut at max_tokens and the `short` judge treats a cut answer as
# longer than any that ended. Profiles score each answer's first score_tokens tokens.
# Cost of the full size, one thread beside another job (measured: plain decoding ~75 tok/s,
# Drift at m = 7 ~11 tok/s, scoring ~0.45 s per 64-token item):
#   training answers: 40 prompts x 2 seeds x <= 96 tokens = 7,680 tokens / 75   ->   ~2 min
#   scoring (shared by the four personas, as they label the same answers):
#     80 answers x 42 system prompts = 3,360 items x ~0.45 s                      ->  ~25 min
#   held-out plain answers: 20 prompts x 96 = 1,920 tokens / 75 (shared)         ->  ~0.5 min
#   Drift: 4 personas x (4 betas + negated at 0.5) x 20 prompts x <= 96 tokens
#     = 38,400 tokens / 11                                                        ->  ~58 min
# Total ~1.5 h, less as answers that end early cost less. Smoke: 8 answers x 7 prompts
# scored, 4 x 2 x 2 Drift answers of <= 24 tokens: ~1-2 min unloaded.
SIZES = {
    "smoke": dict(train=4, held_out=2, attributes=SMOKE_ATTRIBUTES, max_tokens=24, score_tokens=24,
                  betas=(MAIN_BETA,)),
    "full": dict(train=40, held_out=20, attributes=None, max_tokens=96, score_tokens=64,
                 betas=(0.25, 0.5, 1.0, 2.0)),
    # What fits beside the DSP run in one session, one thread each: ~40 min (scoring ~20 min,
    # Drift 4 personas x 3 runs x 12 prompts x <= 48 tokens at ~6 tok/s on one thread).
    "reduced": dict(train=24, held_out=12, attributes=None, max_tokens=48, score_tokens=48, betas=(0.5, 2.0)),
    # The Qwen pair (1.5B LLM, 0.5B sLM) beside other work on one thread: the 1.5B plain decodes at
    # ~5 tok/s and Drift at ~2.5 tok/s there, the 0.5B scores ~3-4x slower than the 135M, so 14 style
    # attributes and one beta (+ the negated profile and in-context learning) keep it near 1.5 h.
    "pair": dict(train=20, held_out=10, attributes=PAIR_ATTRIBUTES, max_tokens=64, score_tokens=64,
                 betas=(MAIN_BETA,)),
    # The decoding terms of the family choice (issue 13): four answers per training prompt, every two of
    # them a pair (6 per prompt), so that the `short` judge, which ties two cut answers, labels enough
    # pairs for the choice to leave the attributes (it needs 10). 20 held-out prompts give the win rate a
    # standard error near 0.1. No in-context baseline: 100+ pairs do not fit its context. ~30 min on one
    # thread beside other work for the `short` and `plain_words` personas.
    "terms": dict(train=20, held_out=20, attributes=PAIR_ATTRIBUTES, max_tokens=96, score_tokens=64,
                  betas=(MAIN_BETA,), answers=4, icl=False),
    # `terms` with room to end: at 96 tokens 19 of 20 plain held-out answers were cut, so a profile that
    # lengthens answers could at worst tie on `short`. In a probe on the first 20 TRAINING prompts
    # (one seed, plain decoding), 9 answers ended within 320 tokens (120-290), and 7 at temperature 0.7,
    # so the cap grows and the sampler stays. ~45 min on one thread for `short` and `plain_words`.
    "terms_long": dict(train=20, held_out=20, attributes=PAIR_ATTRIBUTES, max_tokens=320, score_tokens=64,
                       betas=(MAIN_BETA,), answers=4, icl=False),
}
ANSWERS, ICL = 2, True  # a size's defaults: two answers per training prompt, the in-context baseline



# ---------------------------------------------------------------------------- generation
# The formula's guard (issue 19) and length target (issue 25); 0 is off.
GUARD_FIELDS = ("plausibility", "max_kl", "length_target")
PENALTY_FIELDS = ("repeat_penalty", "frequency_penalty", "presence_penalty", "penalty_last_n", "dry_multiplier",
                  "dry_base", "dry_allowed_length", "dry_penalty_last_n")  # the sampler's, beside its first fields


class GenerationLog:
    """Every generation appended to a jsonl file, keyed by what determines it, so a rerun resumes."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.done[rec["key"]] = rec
                except (ValueError, KeyError):
                    continue  # a line cut by an interruption
        self._f = open(path, "a", encoding="utf-8")

    @staticmethod
    def key(fingerprint: str, weights: list, beta: float, prompt: str, sampling, bias: Optional[list] = None,
            extra: Optional[dict] = None) -> str:
        parts = [fingerprint, weights, beta, prompt, sampling.temperature, sampling.top_p, sampling.top_k,
                 sampling.min_p, sampling.seed, sampling.max_tokens]
        # The formula's static biases (end of generation, words) only when it has them, and the guard and
        # the anti-repetition samplers only where they are on, so that the generations logged before
        # they existed keep their keys.
        parts += [bias] if bias else []
        parts += [extra] if extra else []
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()

    @staticmethod
    def extra(formula, sampling) -> dict:
        """What decides a generation beyond the key's first parts, where it differs from "off": the
        formula's guard (issue 19) and the sampler's penalties and DRY."""
        from drift_cpp.params import Sampling

        out = {name: getattr(formula, name) for name in GUARD_FIELDS if getattr(formula, name, 0.0)}
        off = Sampling()
        out |= {name: getattr(sampling, name) for name in PENALTY_FIELDS
                if hasattr(sampling, name) and getattr(sampling, name) != getattr(off, name)}
        return out

    def generate(self, drift, prompt: str, sampling, fingerprint: str,
                 only_logged: bool = False) -> tuple[Optional[Answer], Optional[int]]:
        """(answer, tokens generated now, or None when it came from the log); only_logged: (None, None) for an
        answer not in the log, rather than decoding it (today's decoding may not be the one logged)."""
        f = drift.formula
        bias = [f.eos, [list(w) for w in f.words]] if (f.eos or f.words) else None
        steers = bool(drift.active_weights or bias)
        k = self.key(fingerprint, [[a, w] for a, w in drift.active_weights],
                     drift.beta if steers else 0.0, prompt, sampling, bias,
                     self.extra(f, sampling) if steers else self.extra(None, sampling))
        if k in self.done:
            return self.answer(self.done[k]), None
        if only_logged:
            return None, None
        g = drift.generate(prompt, sampling)
        rec = {"key": k, "text": g.text, "finish_reason": g.finish_reason, "n_tokens": len(g.tokens),
               "seconds": g.seconds}
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        self.done[k] = rec
        return self.answer(rec), len(g.tokens)

    @staticmethod
    def answer(rec: dict) -> Answer:
        return Answer(rec["text"], ended=rec["finish_reason"] != "length")

    def close(self) -> None:
        self._f.close()


def run_prompts(label: str, drift, prompts, seeds, max_tokens: int, glog: GenerationLog,
                fingerprint: str, sampler: Optional[dict] = None) -> tuple[list[Answer], int]:
    """The answers, and how many of them ended before max_tokens. `sampler`: more Sampling fields (DRY...)."""
    from drift_cpp.steer.session import Sampling

    answers, t0, new_tokens = [], time.monotonic(), 0
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        sampling = Sampling(temperature=TEMPERATURE, top_p=TOP_P, seed=seed, max_tokens=max_tokens, **(sampler or {}))
        answer, n_new = glog.generate(drift, prompt, sampling, fingerprint)
        answers.append(answer)
        fresh = n_new is not None
        new_tokens += n_new or 0
        dt = time.monotonic() - t0
        log(f"  [{label}] {i + 1}/{len(prompts)} {'new' if fresh else 'cached'}; "
            f"{new_tokens} new tokens in {dt:.0f} s ({new_tokens / max(dt, 1e-9):.1f} tok/s)")
    return answers, sum(a.ended for a in answers)


def training_answers(size: str, drift, glog: GenerationLog, fingerprint: str) -> tuple[tuple, list[list[Answer]]]:
    """A size's training prompts and the plain answers to them, one list per seed set (answer s to prompt i
    has seed 1000 s + i): what its profiles are fitted on, read from the log where it holds them."""
    setup = SIZES[size]
    train = TRAIN_PROMPTS[: setup["train"]]
    idx = [PROMPTS.index(q) for q in train]
    return train, [run_prompts(f"train answers, seed set {s}", drift, train, [1000 * s + i for i in idx],
                               setup["max_tokens"], glog, fingerprint)[0]
                   for s in TRAIN_SEEDS[: setup.get("answers", ANSWERS)]]


# ---------------------------------------------------------------------------- analysis
def label_pairs(persona: str, prompts, answers_a, answers_b, tag: str = "") -> tuple[list[PreferencePair], dict]:
    judge = JUDGES[persona]
    pairs, ties, empty = [], 0, 0
    for i, (q, a, b) in enumerate(zip(prompts, answers_a, answers_b)):
        if not a.text.strip() or not b.text.strip():
            empty += 1
            continue
        c = compare(judge, a, b)
        if c == 0.5:
            ties += 1
            continue
        chosen, rejected = (a, b) if c == 1.0 else (b, a)
        pairs.append(PreferencePair(prompt=(Message("user", q),), chosen=chosen.text, rejected=rejected.text,
                                    id=f"{persona}-{i}{tag}", line=i))
    return pairs, {"n_pairs": len(pairs), "n_ties": ties, "n_empty": empty, "n_prompts": len(prompts)}


def label_all(persona: str, prompts, answer_sets) -> tuple[list[PreferencePair], dict]:
    """label_pairs over every two of the answer sets (one pair of sets: exactly label_pairs)."""
    combos = list(itertools.combinations(range(len(answer_sets)), 2))
    pairs, labels = [], {}
    for a, b in combos:
        got, counts = label_pairs(persona, prompts, answer_sets[a], answer_sets[b],
                                  f"-{a}{b}" if len(combos) > 1 else "")
        pairs += got
        labels = {k: labels.get(k, 0) + v for k, v in counts.items()}
    labels["n_prompts"] = len(prompts)
    labels["n_comparisons"] = len(prompts) * len(combos)
    return pairs, labels


def icl_system(pairs: list[PreferencePair]) -> str:
    """The in-context-learning baseline's system prompt: every training pair, preferred answer first."""
    parts = [ICL_INTRO]
    for i, pair in enumerate(pairs, start=1):
        parts.append(f"Example {i}. Question: {pair.prompt[-1].content}\n"
                     f"Preferred answer: {pair.chosen}\nRejected answer: {pair.rejected}")
    return "\n\n".join(parts)


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def win_stats(persona: str, drift_answers: list[Answer], plain_answers: list[Answer]) -> dict:
    judge = JUDGES[persona]
    outcomes = [compare(judge, d, p) for d, p in zip(drift_answers, plain_answers)]
    n = len(outcomes)
    rate = sum(outcomes) / n
    se = math.sqrt(sum((o - rate) ** 2 for o in outcomes) / (n - 1) / n) if n > 1 else None
    scores_d = [judge(a) for a in drift_answers]
    scores_p = [judge(a) for a in plain_answers]

    def mean(xs):
        xs = [x for x in xs if math.isfinite(x)]
        return sum(xs) / len(xs) if xs else None

    return {"win_rate": rate, "se": se, "wins": outcomes.count(1.0), "ties": outcomes.count(0.5),
            "losses": outcomes.count(0.0), "n": n, "outcomes": outcomes,
            "mean_score_drift": mean(scores_d), "mean_score_plain": mean(scores_p),
            "scores_drift": [_finite(s) for s in scores_d], "scores_plain": [_finite(s) for s in scores_p]}


# ---------------------------------------------------------------------------- report
def _fmt(stats: Optional[dict]) -> str:
    if stats is None:
        return "–"
    se = f" ± {stats['se']:.2f}" if stats["se"] is not None else ""
    return f"{stats['win_rate']:.2f}{se}"


def _score(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:+.2f}"


def _models_line(results: dict) -> str:
    slm, llm = results["model"], results.get("llm", results["model"])
    if llm["sha256"] == slm["sha256"]:
        return f"- model: {slm['name']} (sha256 {slm['sha256'][:16]}...), LLM and sLM alike"
    return (f"- LLM: {llm['name']} (sha256 {llm['sha256'][:16]}...), steered by the sLM {slm['name']} "
            f"(sha256 {slm['sha256'][:16]}...), which also scores the pairs")


def markdown(results: dict) -> str:
    c = results["config"]
    betas = c["betas"]
    out = [
        "# Personalized generation with verifiable judges (paper section 4.3)",
        "",
        f"- command: `{results['command']}`",
        f"- git rev (`git -C <repo> rev-parse HEAD`): `{results['git_rev']}`",
        _models_line(results),
        f"- size: {c['size']}: {c['n_train']} training prompts ({c['answers']} answers each, every two a pair), "
        f"{c['n_held_out']} held-out prompts, {len(c['attributes'])} attributes, top {c['top']} steer decoding, "
        f"max_tokens {c['max_tokens']} (profiles score each answer's first {c['score_tokens']} tokens), "
        f"temperature {c['temperature']}, top-p {c['top_p']}",
        f"- answers that ended before max_tokens (the rest were cut there): training "
        f"{results['stopped_before_max_tokens']['train']} / {c['answers'] * c['n_train']}, held-out plain "
        f"{results['stopped_before_max_tokens']['plain']} / {c['n_held_out']}",
        f"- time: training answers {results['timing']['train_generation_s']:.0f} s, "
        f"scoring and fitting {results['timing']['fit_s']:.0f} s, held-out generation "
        f"{results['timing']['eval_generation_s']:.0f} s, total {results['timing']['total_s']:.0f} s",
        "",
        "Each persona's judge is a deterministic function of the text (higher preferred). The judge "
        "labels pairs of plain answers to the training prompts (ties skipped) and a Drift profile is fitted "
        "on them; on the held-out prompts, Drift and plain decoding share the sampler and the seed, and the "
        "judge compares the two answers (win 1, tie 0.5, loss 0). Win rate ± its standard error over the "
        "held-out prompts; 0.5 means no effect. No setting was tuned on the held-out prompts. The in-context "
        "baseline is the plain LLM with every training pair of the persona in its system prompt, preferred "
        "answer first, sampled with the same seeds.",
        "",
        "| persona | judge | pairs (untied / prompts) | "
        + " | ".join(f"β={b:g}" for b in betas) + f" | negated (β={MAIN_BETA:g}) | in-context vs plain "
        f"| Drift β={MAIN_BETA:g} vs in-context | in-context prompt tokens |",
        "|---|---|---|" + "---|" * (len(betas) + 4),
    ]
    for name, r in results["personas"].items():
        sweep = r.get("beta_sweep") or {}
        cells = [_fmt(sweep.get(f"{b:g}")) for b in betas]
        icl_tokens = r["icl"]["prompt_tokens"] if "icl" in r else "–"
        out.append(f"| {name} | {JUDGE_DESCRIPTIONS[name]} | {r['labels']['n_pairs']} / {r['labels']['n_prompts']} | "
                   + " | ".join(cells) + f" | {_fmt(r.get('negated'))} | {_fmt(r.get('icl'))} "
                   f"| {_fmt(r.get('drift_vs_icl'))} | {icl_tokens} |")
    stopped = results["stopped_before_max_tokens"]
    if stopped["train"] + stopped["plain"] < (c["answers"] * c["n_train"] + c["n_held_out"]) / 2:
        out += ["", f"Caveat: most plain answers were cut at max_tokens ({c['max_tokens']}), so the judges see "
                "only each answer's first max_tokens tokens. `short` counts a cut answer as longer than any that "
                "ended and two cut answers as a tie, so it can only reward an answer that ends; see the "
                "per-persona column of answers that ended before max_tokens."]
    out += ["", f"![win rates]({results['plot']})" if results.get("plot") else "", ""]
    for name, r in results["personas"].items():
        lab = r["labels"]
        out += [f"## {name}: {JUDGE_DESCRIPTIONS[name]}", "",
                f"{lab['n_pairs']} labelled pairs from {lab['n_prompts']} training prompts "
                f"({lab['n_ties']} ties, {lab['n_empty']} with an empty answer, skipped)."]
        if r.get("skipped"):
            out += ["", f"Skipped: {r['skipped']}", ""]
            continue
        out += ["", "**Chosen model** (the family choice, as `profile show` says it):", ""]
        out += [f"- {line}" for line in r["profile"]["explain"]]
        if r["profile"]["decoding"]:
            out += ["", "**Decoding attributes** (top by |p|)", "", "| attribute | p |", "|---|---|"]
            out += [f"| {a['id']} | {a['p']:+.3f} |" for a in r["profile"]["decoding"]]
        out += ["", "| configuration | win rate | wins / ties / losses | mean judge score, Drift | plain | "
                "Drift answers ended before max_tokens |", "|---|---|---|---|---|---|"]
        rows = [(f"Drift β={b}", s) for b, s in r["beta_sweep"].items()] + [(f"negated β={MAIN_BETA:g}", r["negated"])]
        rows += [("in-context", r["icl"])] if "icl" in r else []
        for label, s in rows:
            out.append(f"| {label} | {_fmt(s)} | {s['wins']} / {s['ties']} / {s['losses']} | "
                       f"{_score(s['mean_score_drift'])} | {_score(s['mean_score_plain'])} | {s['stopped']} / {s['n']} |")
        ex = r.get("example")
        if ex:
            out += ["", f"Example (held-out prompt: *{ex['prompt']}*):", "",
                    f"- plain: {json.dumps(ex['plain'], ensure_ascii=False)}",
                    f"- Drift β={MAIN_BETA:g}: {json.dumps(ex['drift'], ensure_ascii=False)}",
                    f"- negated: {json.dumps(ex['negated'], ensure_ascii=False)}"]
        out.append("")
    return "\n".join(out)


PLOT = "generation_win_rates.png"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    personas = [p for p, r in results["personas"].items() if not r.get("skipped")]
    if not personas:
        return False
    betas = results["config"]["betas"]
    series = [(f"Drift β={b:g}", [results["personas"][p]["beta_sweep"][f"{b:g}"] for p in personas]) for b in betas]
    series.append((f"negated β={MAIN_BETA:g}", [results["personas"][p]["negated"] for p in personas]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(2.4 + 1.6 * len(personas), 4.0))
    for j, (label, stats) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(personas))]
        ax.bar(xs, [s["win_rate"] for s in stats], width, label=label,
               yerr=[s["se"] or 0.0 for s in stats], capsize=2)
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(personas)), personas)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("judge win rate vs plain")
    ax.set_title(f"Drift vs plain decoding, {results['config']['n_held_out']} held-out prompts (± s.e.)")
    ax.legend(fontsize=7, ncol=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="smoke")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: experiments/results/generation_judges_<size>)")
    ap.add_argument("--img", type=Path, default=None, help="folder for the plot (default: the output folder)")
    ap.add_argument("--cache", type=Path, default=None, help="score cache file (default: the drift-cpp cache)")
    ap.add_argument("--model", default=None, help="model name or GGUF path (default: the embedded SmolLM2-135M)")
    ap.add_argument("--llm", default=None, help="the steered LLM (default: --model)")
    ap.add_argument("--slm", default=None, help="the sLM that scores and steers (default: --model)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core)")
    ap.add_argument("--personas", default=",".join(PERSONAS),
                    help="comma-separated personas to decode for (default: all); the others are labelled only")
    ap.add_argument("--family", default=choice.AUTO,
                    help="the profiles' model family: auto (chosen per persona, the default) or e.g. length")
    args = ap.parse_args(argv)
    choice.parse_family(args.family)
    decoded = args.personas.split(",")
    if unknown := sorted(set(decoded) - set(PERSONAS)):
        raise DriftError(f"--personas: unknown {', '.join(unknown)} (choose from {', '.join(PERSONAS)})")
    llm_name, slm_name = args.llm or args.model, args.slm or args.model

    cfg = SIZES[args.size]
    out = args.out or REPO / "experiments" / "results" / f"generation_judges_{args.size}"
    out.mkdir(parents=True, exist_ok=True)
    command, rev = command_line(__file__, argv), git_rev()

    from drift_cpp.steer.session import Drift
    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.params import EngineOptions
    from drift_cpp.fit.profile import FitOptions, Profile
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    t0 = time.monotonic()
    options = ModelOptions(threads=args.threads)
    llm, model = load_model(llm_name, options), load_model(slm_name, options)
    # Generations are keyed by the models that make them; one model alone keeps its earlier key.
    fp = model.identity["sha256"] if llm.same_as(model.identity) else f"{llm.identity['sha256']}/{model.identity['sha256']}"
    attributes = builtin_attributes()
    if cfg["attributes"] is not None:
        attributes = attributes.select(include=cfg["attributes"])
    train = TRAIN_PROMPTS[: cfg["train"]]
    held_out = HELD_OUT_PROMPTS[: cfg["held_out"]]
    train_idx = [PROMPTS.index(q) for q in train]
    held_idx = [PROMPTS.index(q) for q in held_out]
    mt = cfg["max_tokens"]
    glog = GenerationLog(out / "generations.jsonl")
    log(f"{len(train)} training prompts, {len(held_out)} held-out prompts, {len(attributes)} attributes, "
        f"max_tokens {mt}, betas {list(cfg['betas'])}; generations log {glog.path}")

    # 1. two plain answers per training prompt (shared by every persona)
    plain = Drift(llm_name, llm_name, options=options)
    seeds = TRAIN_SEEDS[: cfg.get("answers", ANSWERS)]
    runs = [run_prompts(f"train answers, seed set {s}", plain, train, [1000 * s + i for i in train_idx], mt, glog, fp)
            for s in seeds]
    answers = [a for a, _ in runs]
    stopped = {"train": sum(n for _, n in runs)}
    t_train = time.monotonic()

    # 2. label and fit a profile per persona (scores are shared through the cache)
    cache = ScoreCache(args.cache)
    scorer = Scorer(model, cache=cache, max_response_tokens=cfg["score_tokens"], progress=TokenProgress)
    log(f"score cache {cache.path}")
    fit_options = FitOptions(top=TOP, normalize="sum", method="qp", family=args.family)
    personas: dict[str, dict] = {}
    profiles, persona_pairs = {}, {}
    for persona in PERSONAS:
        pairs, labels = label_all(persona, train, answers)
        personas[persona] = {"judge": JUDGE_DESCRIPTIONS[persona], "labels": labels}
        log(f"{persona}: {labels['n_pairs']} labelled pairs ({labels['n_ties']} ties, {labels['n_empty']} empty)")
        if not pairs:
            personas[persona]["skipped"] = "no untied training pair, so no profile"
            continue
        if persona not in decoded:
            personas[persona]["skipped"] = "not decoded in this run (--personas)"
            continue
        # every pair under every attribute, as when docs/results.md was made (before screening)
        profile = Profile.fit(pairs, scorer, attributes, fit_options, screen=None)
        profiles[persona] = profile
        persona_pairs[persona] = pairs
        personas[persona]["profile"] = {
            "p": dict(zip(attributes.ids, profile.p.tolist())),
            "decoding": [{"id": a.id, "p": w} for a, w in profile.decoding_weights()] if profile.uses_attributes() else [],
            "family": choice.family_name(profile.choice.family), "reason": profile.choice.reason,
            "cv": profile.choice.cv, "length_weight": profile.length_weight(), "words": profile.word_weights(),
            "explain": choice.explain(profile.choice, [(a.name, w) for a, w in profile.decoding_weights()],
                                      profile.word_weights()),
        }
    t_fit = time.monotonic()

    # 3. held-out: plain once, then Drift per persona, profile sign and beta
    eval_seeds = [EVAL_SEED_BASE + i for i in held_idx]
    plain_answers, stopped["plain"] = run_prompts("held-out plain", plain, held_out, eval_seeds, mt, glog, fp)
    del plain
    generations = {"plain": plain_answers}
    for persona, profile in profiles.items():
        r = personas[persona]
        drift = Drift(llm_name, slm_name, profile=profile, beta=MAIN_BETA, top_attributes=TOP, options=options)
        r["beta_sweep"] = {}
        for beta in cfg["betas"]:
            drift.beta = beta
            got, n_stop = run_prompts(f"{persona} Drift beta={beta:g}", drift, held_out, eval_seeds, mt, glog, fp)
            generations[f"{persona}/beta={beta:g}"] = got
            r["beta_sweep"][f"{beta:g}"] = win_stats(persona, got, plain_answers) | {"stopped": n_stop}
        if f"{MAIN_BETA:g}" not in r["beta_sweep"]:  # never with the built-in sizes
            raise DriftError("the beta sweep must include the main beta")
        del drift
        neg = Drift(llm_name, slm_name, profile=[(profile, -1.0)], beta=MAIN_BETA, top_attributes=TOP,
                    options=options)  # the negated profile: a blend with weight -1
        neg_answers, n_stop = run_prompts(f"{persona} negated beta={MAIN_BETA:g}", neg, held_out, eval_seeds, mt,
                                        glog, fp)
        del neg
        generations[f"{persona}/negated"] = neg_answers
        r["negated"] = win_stats(persona, neg_answers, plain_answers) | {"stopped": n_stop}
        r["win_rate"] = r["beta_sweep"][f"{MAIN_BETA:g}"]["win_rate"]
        r["negated_win_rate"] = r["negated"]["win_rate"]
        r["example"] = {"prompt": held_out[0], "plain": plain_answers[0].text,
                        "drift": generations[f"{persona}/beta={MAIN_BETA:g}"][0].text, "negated": neg_answers[0].text}
        log(f"{persona}: win rate {r['win_rate']:.2f} at beta {MAIN_BETA:g}, negated {r['negated_win_rate']:.2f}")
        if not cfg.get("icl", ICL):
            continue
        # In-context learning: the plain LLM shown the persona's training pairs; its prompt is
        # prefilled once and reused by every held-out prompt (the engine keeps the common prefix).
        system = icl_system(persona_pairs[persona])
        icl = Drift(llm_name, llm_name, system=system, options=options, engine=EngineOptions(n_ctx=ICL_N_CTX))
        icl_answers, n_stop = run_prompts(f"{persona} in-context", icl, held_out, eval_seeds, mt, glog,
                                          f"{fp}/icl/{hashlib.sha256(system.encode()).hexdigest()}")
        del icl
        generations[f"{persona}/icl"] = icl_answers
        r["icl"] = win_stats(persona, icl_answers, plain_answers) | {
            "stopped": n_stop, "prompt_tokens": len(llm.tokenize_prompt(llm.render([{"role": "system", "content": system}])))}
        r["drift_vs_icl"] = win_stats(persona, generations[f"{persona}/beta={MAIN_BETA:g}"], icl_answers)
    glog.close()
    t_done = time.monotonic()

    results = {
        "command": command,
        "git_rev": rev,
        "model": model.identity,
        "llm": llm.identity,
        "config": {"size": args.size, "n_train": len(train), "n_held_out": len(held_out),
                   "attributes": list(attributes.ids), "top": TOP, "max_tokens": mt,
                   "score_tokens": cfg["score_tokens"],
                   "temperature": TEMPERATURE, "top_p": TOP_P, "betas": list(cfg["betas"]), "main_beta": MAIN_BETA,
                   "train_seeds": [[1000 * s + i for i in train_idx] for s in seeds], "answers": len(seeds),
                   "eval_seeds": eval_seeds, "fit": dataclasses.asdict(fit_options), "personas": list(PERSONAS),
                   "judges": JUDGE_DESCRIPTIONS},
        "prompts": {"train": list(train), "held_out": list(held_out)},
        "timing": {"train_generation_s": t_train - t0, "fit_s": t_fit - t_train,
                   "eval_generation_s": t_done - t_fit, "total_s": t_done - t0},
        "stopped_before_max_tokens": stopped,
        "personas": personas,
        "train_answers": [[a._asdict() for a in run] for run in answers],
        "generations": {k: [a._asdict() for a in v] for k, v in generations.items()},
    }
    img = args.img or out
    img.mkdir(parents=True, exist_ok=True)
    if plot(results, img / PLOT):  # the link from results.md
        results["plot"] = (Path(os.path.relpath(img, out)) / PLOT).as_posix()
    write_results(out, results, markdown(results))
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (f", {img / PLOT}" if results.get("plot") else ""))
    print(f"persona       pairs  win@β={MAIN_BETA:g}  negated")
    for name, r in personas.items():
        if r.get("skipped"):
            print(f"{name:<12} {r['labels']['n_pairs']:>5}  skipped: {r['skipped']}")
        else:
            print(f"{name:<12} {r['labels']['n_pairs']:>5}  {r['win_rate']:8.2f}  {r['negated_win_rate']:7.2f}")
    return 0


if __name__ == "__main__":
    run(main)
