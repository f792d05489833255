#!/usr/bin/env python
"""DSP personas as transparent judges: simulated users who prefer answers in one domain's style.

Data: DSP (Domain-Specific Preference) -- Cheng et al. 2023, "Everyone Deserves A Reward: Learning
Customized Human Preferences" (arXiv 2309.03126), CC BY-NC 4.0. Each query has five responses:
ChatGPT under four domain system prompts (academy, business, entertainment, literature) and the
original Alpaca answer (normal). The persona of domain d prefers responses[d] over each other one.

The judge of persona d is linear in the words, like generation_judges' judges a function of the text:

    score_d(text) = sum over the lexicon's words w of weight_d[w] * tfidf_w(text)

with tfidf as drift_cpp.fit.features computes it (sublinear tf times idf, the row l2-normalized over
the lexicon's words), so it reads the mix of words, not how many there are. The lexicon is every word
in at least MIN_DF of the training responses (rarer words are topics, not styles); the weights are
the package's Bradley-Terry fit (approximation.bradley_terry_coefficients, l2 = L2) on the pairs
(responses[d], responses[o]) of the TRAIN queries: those with an even id number. The odd ones are held
out: --report measures on them only. Lexicon, idf and weights are stored in dsp_personas.json, one
word a line; --refit writes it again from the data.

A text with no word of the lexicon (an empty one included) scores -inf, lowest: nothing in it shows a
style. A cut answer (ended False) is scored on its text as it is: a style shows in a prefix, and the
score does not grow with the length.

A near-tie, skipped as a person would skip it: two scores within NEAR_MARGIN = ln(11/9), where the fitted
model gives the preferred answer less than 55%.

    python experiments/dsp_personas.py --words 12                                  # the top words
    python experiments/dsp_personas.py --refit                                     # dsp_personas.json (~10 s)
    python experiments/dsp_personas.py --report --out docs/results/dsp_personas    # agreement, held out
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np

from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from drift_cpp.fit.approximation import bradley_terry_coefficients
from drift_cpp.fit.features import term_counts, tfidf_fit, tfidf_transform
from dsp_fewshot import CITATION, DEFAULT_DATA, PERSONAS, STYLES, load_dsp
from generation_judges import Answer, compare, n_words
from run_info import REPO, command_line, git_rev, log, run, write_results

WEIGHTS = Path(__file__).resolve().parent / "dsp_personas.json"
MIN_DF = 10       # a lexicon word is in >= 10 of the ~1,000 training responses (1%)
L2 = 1.0          # the package's bag-of-words RM default (evaluation.methods.bow_rm)
DIGITS = 4        # stored weights and idf are rounded: the rule is the file, read as it is
NEAR_MARGIN = math.log(11 / 9)  # sigmoid(margin) = 0.55


# ---------------------------------------------------------------------------- split and pairs
def is_held_out(row: dict) -> bool:
    """Queries with an odd id number ("dsp-0013") are held out; the file's order does not matter."""
    return int(row["id"].rsplit("-", 1)[-1]) % 2 == 1


def persona_pairs(rows: list[dict], persona: str) -> list[tuple[str, str, str, str]]:
    """(own response, other response, other style, query id) of every query, DSP's own pairing; empty ones
    skipped."""
    return [(r["responses"][persona], r["responses"][other], other, r["id"])
            for r in rows for other in STYLES
            if other != persona and r["responses"][persona].strip() and r["responses"][other].strip()]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- fit and store
def fit(rows: list[dict]) -> dict:
    """Lexicon, idf and each persona's weights from the training queries: the content of WEIGHTS."""
    train = [r for r in rows if not is_held_out(r)]
    texts = [t for r in train for t in r["responses"].values() if t.strip()]
    df = Counter(w for t in texts for w in term_counts(t))
    lexicon = {w for w, n in df.items() if n >= MIN_DF}
    vocab, idf = tfidf_fit([{w: c for w, c in term_counts(t).items() if w in lexicon} for t in texts])
    idf = np.round(idf, DIGITS)
    weights = {}
    for persona in PERSONAS:
        pairs = persona_pairs(train, persona)
        D = (tfidf_transform([own for own, *_ in pairs], vocab, idf)
             - tfidf_transform([other for _, other, *_ in pairs], vocab, idf))
        weights[persona] = np.round(bradley_terry_coefficients(D, L2), DIGITS)
    words = sorted(vocab, key=vocab.get)
    return {"words": words, "idf": idf, "weights": weights, "train_queries": len(train)}


def dumps(model: dict, data: Path) -> str:
    """JSON with one lexicon word a line: "word": [idf, weight per persona]."""
    head = {"about": "Transparent DSP persona judges (experiments/dsp_personas.py). " + CITATION,
            "data": {"file": data.name, "sha256": file_sha256(data)},
            "train": f"queries with an even id number ({model['train_queries']})",
            "min_df": MIN_DF, "l2": L2, "columns": ["idf", *PERSONAS]}
    lines = [f"  {json.dumps(w, ensure_ascii=False)}: "
             + json.dumps([float(model["idf"][i])] + [float(model["weights"][p][i]) for p in PERSONAS])
             for i, w in enumerate(model["words"])]
    return json.dumps(head, ensure_ascii=False)[:-1] + ',\n "words": {\n' + ",\n".join(lines) + "\n}}\n"


@cache
def load(path: Path = WEIGHTS) -> tuple[dict[str, int], np.ndarray, dict[str, np.ndarray]]:
    """(vocab, idf, weights per persona) from the stored file."""
    if not path.exists():
        raise DriftError(f"{path}: no such file (python experiments/dsp_personas.py --refit writes it)")
    stored = json.loads(path.read_text("utf-8"))
    words = list(stored["words"])
    table = np.array([stored["words"][w] for w in words], dtype=np.float64)
    columns = stored["columns"]
    return ({w: i for i, w in enumerate(words)}, table[:, columns.index("idf")],
            {p: table[:, columns.index(p)] for p in PERSONAS})


# ---------------------------------------------------------------------------- judges
def score(persona: str, text: str) -> float:
    vocab, idf, w = load()
    x = tfidf_transform([text], vocab, idf)[0]  # words outside the lexicon are dropped
    return float(x @ w[persona]) if x.any() else -math.inf


def _judge(persona: str) -> Callable[[Answer], float]:
    def judge(a: Answer) -> float:
        return score(persona, a.text)  # a cut answer too: its style so far
    judge.__name__ = f"judge_{persona}"
    judge.__doc__ = f"More like DSP's {persona}-styled responses is better; no lexicon word is the worst."
    return judge


JUDGES: dict[str, Callable[[Answer], float]] = {p: _judge(p) for p in PERSONAS}
JUDGE_DESCRIPTIONS = {p: f"words like DSP's {p}-styled answers (a linear tfidf score over a fixed lexicon, "
                         f"experiments/dsp_personas.json; no lexicon word is worst)" for p in PERSONAS}


def near_tie(persona: str, a: Answer, b: Answer) -> bool:
    """Scores within NEAR_MARGIN (two texts without a lexicon word included): the pick is skipped."""
    sa, sb = JUDGES[persona](a), JUDGES[persona](b)
    return sa == sb or abs(sa - sb) < NEAR_MARGIN


def top_words(persona: str, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The n most positive and the n most negative (word, weight) of a persona."""
    vocab, _, w = load()
    words = sorted(vocab, key=vocab.get)
    order = np.argsort(-w[persona], kind="stable")
    return ([(words[i], float(w[persona][i])) for i in order[:n]],
            [(words[i], float(w[persona][i])) for i in order[::-1][:n]])


# ---------------------------------------------------------------------------- validation
def agreement(judge: Callable[[Answer], float], pairs) -> float:
    """Share of (own, other) pairs where the judge prefers the own-domain response (a tie counts 0.5)."""
    return float(np.mean([compare(judge, Answer(own), Answer(other)) for own, other, *_ in pairs]))


def clustered_se(judge: Callable[[Answer], float], pairs) -> float:
    """Standard error of agreement with the queries as the units (a query's pairs share its responses)."""
    by_query: dict[str, list[float]] = {}
    for own, other, _, query in pairs:
        by_query.setdefault(query, []).append(compare(judge, Answer(own), Answer(other)))
    means = [np.mean(v) for v in by_query.values()]
    return float(np.std(means, ddof=1) / math.sqrt(len(means)))


def longer(a: Answer) -> float:
    return float(n_words(a.text))


def validate(rows: list[dict]) -> dict:
    """Per persona, on the held-out queries: the judge's agreement with DSP's labels, overall and per
    other style, beside "longer wins" on the same pairs, and the share and agreement of decisive pairs."""
    held_out = [r for r in rows if is_held_out(r)]
    out = {}
    for persona, judge in JUDGES.items():
        pairs = persona_pairs(held_out, persona)
        decisive = [p for p in pairs if not near_tie(persona, Answer(p[0]), Answer(p[1]))]
        out[persona] = {
            "pairs": len(pairs), "agreement": agreement(judge, pairs), "se": clustered_se(judge, pairs),
            "longer_wins": agreement(longer, pairs),
            "by_other": {o: {"agreement": agreement(judge, mine), "longer_wins": agreement(longer, mine)}
                         for o in STYLES if o != persona for mine in [[p for p in pairs if p[2] == o]]},
            "decisive_share": len(decisive) / len(pairs),
            "decisive_agreement": agreement(judge, decisive) if decisive else None}
    return {"held_out_queries": len(held_out), "personas": out}


# ---------------------------------------------------------------------------- report
def markdown(results: dict) -> str:
    v = results["validation"]
    out = ["# DSP personas as transparent judges", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- data: `{results['data']['file']}` (sha256 {results['data']['sha256'][:12]}…); "
           f"weights fitted on `{results['weights_data_sha256'][:12]}…`",
           f"- held-out queries: {v['held_out_queries']} (odd id numbers); lexicon: {results['lexicon']} words "
           f"(in >= {MIN_DF} training responses), l2 {L2}", f"- {CITATION}", "",
           "Agreement with DSP's labels (own-domain response preferred; tie 0.5), judge / longer wins, on the "
           "same held-out pairs (± a standard error with the queries as units):", "",
           "| persona | pairs | all | " + " | ".join(f"vs {o}" for o in STYLES) + " | decisive share | decisive agreement |",
           "|---|---|---|" + "---|" * len(STYLES) + "---|---|"]
    for p, r in v["personas"].items():
        cells = [f"{r['by_other'][o]['agreement']:.2f} / {r['by_other'][o]['longer_wins']:.2f}"
                 if o in r["by_other"] else "–" for o in STYLES]
        out.append(f"| {p} | {r['pairs']} | **{r['agreement']:.2f}** ± {r['se']:.2f} / {r['longer_wins']:.2f} | " + " | ".join(cells)
                   + f" | {r['decisive_share']:.2f} | {r['decisive_agreement']:.2f} |")
    out += ["", f"Decisive: the two scores differ by at least ln(11/9) = {NEAR_MARGIN:.3f} (near_tie); "
            "a simulated user skips the rest.", "", "Top words (weight), most positive and most negative:", ""]
    for p, (up, down) in results["top_words"].items():
        out.append(f"- **{p}**: + " + ", ".join(f"{w} ({x:.2f})" for w, x in up)
                   + "; − " + ", ".join(f"{w} ({x:.2f})" for w, x in down))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DSP jsonl (default: %(default)s)")
    ap.add_argument("--refit", action="store_true", help=f"fit the judges on the training queries and write {WEIGHTS.name}")
    ap.add_argument("--report", action="store_true", help="validate on the held-out queries and write --out")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "dsp_personas")
    ap.add_argument("--words", type=int, default=10, help="top words shown per persona")
    args = ap.parse_args(argv)
    if args.refit:
        atomic_write_text(WEIGHTS, dumps(fit(load_dsp(args.data)), args.data))
        load.cache_clear()
        log(f"wrote {WEIGHTS}")
    words = {p: top_words(p, args.words) for p in PERSONAS}
    if not args.report:
        for p, (up, down) in words.items():
            print(f"{p}: + {' '.join(w for w, _ in up)} | - {' '.join(w for w, _ in down)}")
        return 0
    rows = load_dsp(args.data)
    results = {"command": command_line(__file__, argv), "git_rev": git_rev(),
               "data": {"file": args.data.name, "sha256": file_sha256(args.data)},
               "weights_data_sha256": json.loads(WEIGHTS.read_text("utf-8"))["data"]["sha256"],
               "lexicon": len(load()[0]), "citation": CITATION,
               "validation": validate(rows), "top_words": words}
    report = markdown(results)
    write_results(args.out, results, report)
    log(f"wrote {args.out / 'results.md'}")
    print(report)
    return 0


if __name__ == "__main__":
    run(main)
