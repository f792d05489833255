#!/usr/bin/env python
"""Per-user model (issue 13): the joint model of every feature family against the paper's fit and the trivial baselines.

Data:
  * CNN/DM summary comparisons by two named labelers -- Stiennon et al. 2020, "Learning to summarize from
    human feedback" (OpenAI summarize-from-feedback, CNN/DM validation batch cnndm0, Modified MIT license;
    articles from the CNN/DailyMail corpus, research use). A worker's comparisons are one user's pairs.
  * DSP -- Cheng et al. 2023, "Everyone Deserves A Reward" (arXiv 2309.03126), CC BY-NC 4.0: the four
    personas, with experiments/dsp_fewshot.py's query split and scoring.

Protocol (nothing is tuned on a test pool):
  * CNN/DM: a fixed seed draws --articles articles per worker and splits them, by article, into a train
    pool (60%) and a disjoint test pool. The prompt is "Summarize this article:" and the article's first
    --article-words words; summaries are never truncated. DSP: dsp_fewshot's split and scoring, at
    --dsp-queries queries and --max-response-tokens.
  * Every unique (prompt, response) is scored once under the base prompt and each attribute (score cache).
  * For each user and k, --seeds draws of k training pairs from the train pool; each method is fitted on
    them and scored on the whole test pool (evaluation.protocols.holdout). `joint` is what drift-cpp's
    profiles fit (choice.choose): every family in one fit on the k training pairs, each shrunk by its prior.

    python experiments/family_choice.py --threads 1 --articles 20 --out docs/results/family_choice   # as in docs/results.md
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from drift_cpp import evaluation as ev
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.demo import DEMO_ATTRIBUTES as ATTRIBUTES  # the demo's 14, as dsp_fewshot --size pair
from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from drift_cpp.preferences import Message, PreferencePair
from dsp_fewshot import DEFAULT_DATA as DSP_DATA, PERSONAS, load_dsp, persona_pairs, score_items, split_queries
from run_info import REPO, command_line, git_rev, log, run

CITATIONS = ('CNN/DM comparisons: Stiennon et al. 2020, "Learning to summarize from human feedback" '
             "(summarize-from-feedback, batch cnndm0, Modified MIT license; articles from CNN/DailyMail). "
             'DSP: Cheng et al. 2023, "Everyone Deserves A Reward: Learning Customized Human Preferences" '
             "(arXiv 2309.03126), CC BY-NC 4.0")
CNNDM_DATA = REPO.parent / "shared" / "data" / "cnndm" / "cnndm_workers.jsonl"
ARTICLE_SEED = 13
TRAIN_FRACTION = 0.6
INSTRUCTION = "Summarize this article:"


# ----------------------------------------------------------------------------- CNN/DM
def load_cnndm(path: Path) -> list[dict]:
    if not path.exists():
        raise DriftError(f"{path}: no such file")
    rows = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                row["summaries"][row["choice"]], row["article"], row["worker"], row["id"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                raise DriftError(f"{path}:{n}: not a CNN/DM comparison ({e})") from None
            rows.append(row)
    return rows


def cnndm_prompt(article: str, words: int) -> str:
    """The instruction and the article's first `words` words: only the article is ever cut."""
    return f"{INSTRUCTION}\n\n{' '.join(article.split()[:words])}"


def cnndm_pools(rows: list[dict], worker: str, n_articles: int) -> tuple[list[dict], list[dict]]:
    """A worker's comparisons on n_articles of their articles, split by article into train and test pools."""
    mine = [r for r in rows if r["worker"] == worker]
    articles = sorted({r["id"] for r in mine})
    order = np.random.default_rng([ARTICLE_SEED, len(articles)]).permutation(len(articles))[:n_articles]
    n_train = int(round(TRAIN_FRACTION * len(order)))
    train = {articles[i] for i in order[:n_train]}
    test = {articles[i] for i in order[n_train:]}
    return [r for r in mine if r["id"] in train], [r for r in mine if r["id"] in test]


def cnndm_rewards(rows: list[dict], scorer, attributes, words: int) -> dict:
    """Reward row of every unique (article, summary), 'sum' normalization."""
    from drift_cpp.fit.profile import reward_features

    keys, items = [], []
    for r in rows:
        for s in r["summaries"]:
            key = (r["id"], s)
            if key not in keys and s.strip():
                keys.append(key)
                prompt = (Message("user", cnndm_prompt(r["article"], words)),)
                items.append(PreferencePair(prompt, s, s, f"{r['id']}/{len(keys)}", 0))
    R, _ = reward_features(scorer, items, attributes.base, attributes.attributes, "sum")
    return {key: row for key, row in zip(keys, R)}


def cnndm_fold(rows: list[dict], rewards: dict) -> ev.Fold:
    W, L, texts, groups = [], [], [], []
    for r in rows:
        c = r["summaries"][r["choice"]]
        x = r["summaries"][1 - r["choice"]]
        if not (c.strip() and x.strip()):
            continue  # an empty summary (one in the data) has no reward row: the pair is skipped
        groups.append(r["id"])
        W.append(rewards[(r["id"], c)])
        L.append(rewards[(r["id"], x)])
        texts.append((c, x))
    return ev.Fold(W=np.array(W), L=np.array(L), texts=texts, groups=groups)


# --------------------------------------------------------------------------- main
def add_data_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that decide the users' pools and their scores (shared with choice_constants.py)."""
    ap.add_argument("--threads", type=int, default=0, help="scoring threads (1 on a shared machine)")
    ap.add_argument("--cnndm-data", type=Path, default=CNNDM_DATA, help="default: %(default)s")
    ap.add_argument("--dsp-data", type=Path, default=DSP_DATA, help="default: %(default)s")
    ap.add_argument("--articles", type=int, default=12, help="articles per CNN/DM worker (docs/results.md: 20)")
    ap.add_argument("--article-words", type=int, default=100, help="words of each article in the prompt")
    ap.add_argument("--dsp-queries", type=int, default=24, help="dsp_fewshot --size pair's split")
    ap.add_argument("--max-response-tokens", type=int, default=64, help="DSP responses' scored tokens")
    ap.add_argument("--datasets", default="cnndm,dsp", help="which of cnndm, dsp (comma-separated)")


def build_users(args) -> tuple[dict, object, object, list]:
    """{user: (train fold, test fold)}, the sLM, the attributes and the CNN/DM rows; every unique
    (prompt, response) is scored once (or read from the score cache)."""
    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    attributes = builtin_attributes().select(include=ATTRIBUTES)
    model = load_model(None, ModelOptions(threads=max(0, args.threads)))
    cache = ScoreCache()
    users = {}  # name -> (train fold, test fold)
    datasets = set(args.datasets.split(","))
    rows = load_cnndm(args.cnndm_data) if "cnndm" in datasets else []
    cnn_scorer = Scorer(model, cache=cache, max_response_tokens=0)  # whole summaries, as before
    for worker in sorted({r["worker"] for r in rows}):
        train, test = cnndm_pools(rows, worker, args.articles)
        rewards = cnndm_rewards(train + test, cnn_scorer, attributes, args.article_words)
        users[f"cnndm {worker[:6]}"] = (cnndm_fold(train, rewards), cnndm_fold(test, rewards))
    if "dsp" in datasets:
        dsp_scorer = Scorer(model, cache=cache, max_response_tokens=args.max_response_tokens)
        train_rows, test_rows = split_queries(load_dsp(args.dsp_data), args.dsp_queries)
        rewards, _ = score_items(train_rows + test_rows, dsp_scorer, attributes)
        for persona in PERSONAS:
            (train, groups), (test, _) = (persona_pairs(r, persona, rewards) for r in (train_rows, test_rows))
            users[f"dsp {persona}"] = (replace(train["sum"], groups=groups), test["sum"])
    return users, model, attributes, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "family_choice")
    add_data_arguments(ap)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ks", default="10,20,40")
    ap.add_argument("--score-only", action="store_true", help="fill the score cache and stop")
    args = ap.parse_args(argv)

    log(CITATIONS)
    t0 = time.monotonic()
    users, model, attributes, rows = build_users(args)
    scoring_s = time.monotonic() - t0
    log(f"scored (or read from the cache) in {scoring_s:.0f} s")
    if args.score_only:
        return 0

    ks = [int(k) for k in args.ks.split(",")]
    results = {name: analyse(train, test, ks, args.seeds) for name, (train, test) in users.items()}
    timing = fit_timing(users, model, attributes, rows, args.article_words)
    report = {"citations": CITATIONS, "command": command_line(__file__, argv), "git_rev": git_rev(),
              "model": model.identity, "attributes": list(ATTRIBUTES),
              "config": {"datasets": sorted(args.datasets.split(",")), "articles": args.articles, "article_words": args.article_words, "dsp_queries": args.dsp_queries,
                         "max_response_tokens": args.max_response_tokens, "seeds": args.seeds, "ks": ks,
                         "article_seed": ARTICLE_SEED, "train_fraction": TRAIN_FRACTION},
              "users": results, "timing": timing}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "results.md", markdown(report))
    log(f"wrote {args.out / 'results.json'} and results.md")
    print(markdown(report))
    return 0


JOINT = "joint (default)"
METHODS = {JOINT: "chosen", "qp (paper)": "drift", "bt l2=1000 (default fit)": ("bt", {"l2": 1000.0}),
           "longer": "longer", "bow_rm": ("bow_rm", {"l2": 1.0}), "best_single": "best_single"}
BASELINES = ("longer", "bow_rm", "best_single")


def analyse(train: ev.Fold, test: ev.Fold, ks, seeds) -> dict:
    """Accuracy vs k on the test pool, and each family's mean share of the model fitted on the draws (as
    holdout draws them)."""
    from drift_cpp.fit import choice

    out = ev.holdout(train, test, ks, seeds, ev.DEFAULT_SEED, METHODS)
    shares = []
    for k in out["ks"]:
        got = []
        for s in range(seeds):
            rng = np.random.default_rng([ev.DEFAULT_SEED, s, k])
            sample = train.take(rng.choice(len(train), size=k, replace=False))
            got.append(choice.choose(sample.W, sample.L, sample.texts, groups=sample.groups).shares)
        shares.append({f: float(np.mean([g.get(f, 0.0) for g in got])) for f in choice.FAMILIES})
    out["shares"] = shares
    out["longer_rate"] = {"train": _longer_rate(train), "test": _longer_rate(test)}
    return out


def _longer_rate(fold: ev.Fold) -> float:
    return float(np.mean([len(c) > len(r) for c, r in fold.texts]))


def fit_timing(users, model, attributes, rows, words) -> dict:
    """CPU seconds of the profile's model on a whole train pool, beside the CPU seconds of scoring one CNN/DM pair
    (both summaries under every prompt, no cache, the article's prefix evaluated once per prompt)."""
    from drift_cpp.fit import choice
    from drift_cpp.score.scorer import Scorer

    fits = {}
    for name, (train, _) in users.items():
        t = time.process_time()
        choice.choose(train.W, train.L, train.texts, groups=train.groups)
        fits[name] = {"pairs": len(train), "cpu_s": time.process_time() - t}
    t = time.process_time()
    cnndm_rewards(rows[:1], Scorer(model, cache=None, max_response_tokens=0), attributes, words)
    return {"choose": fits, "score_one_pair_cpu_s": time.process_time() - t}


def markdown(r: dict) -> str:
    c = r["config"]
    out = ["# The per-user joint model against the paper's fit and the trivial baselines", "", r["citations"] + ".", "",
           f"- command: `{r['command']}`", f"- git rev: `{r['git_rev']}`",
           f"- model: {r['model']['name']}; {len(r['attributes'])} attributes: {', '.join(r['attributes'])}",
           f"- CNN/DM: {c['articles']} articles per worker (seed {c['article_seed']}), {int(c['train_fraction'] * 100)}% "
           f"of them the train pool, the rest the test pool; prompt: the instruction and the article's first "
           f"{c['article_words']} words; summaries whole",
           f"- DSP: dsp_fewshot's split of {c['dsp_queries']} queries, responses scored on their first "
           f"{c['max_response_tokens']} tokens (`longer` and `bow_rm` read the whole text)",
           f"- {c['seeds']} draws of k training pairs per k, each evaluated on the whole test pool; ties count 0.5", ""]
    ks = r["config"]["ks"]
    mean_by = {}  # user -> label -> k -> mean accuracy
    for name, res in r["users"].items():
        out += [ev.format_table(res, f"{name}: {res['n_train']} train-pool / {res['n_test']} test-pool pairs "
                                     f"(longer chosen in {res['longer_rate']['test']:.0%} of the test pairs)"), "",
                "each family's mean share of the joint model's margins, by k: "
                + "; ".join(f"k={k}: " + ", ".join(f"{f} {v:.0%}" for f, v in sh.items())
                            for k, sh in zip(res["ks"], res["shares"])), ""]
        mean_by[name] = {label: dict(zip(res["ks"], m["mean"])) for label, m in res["methods"].items()}
    out += ["## The joint model vs the paper's fit and the best baseline at each k", "",
            "Each cell: joint / qp / the best of longer, bow_rm and best_single (which one).", "",
            "| user | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]

    def cell(m, k):
        if k not in m[JOINT]:
            return "-"
        best = max(BASELINES, key=lambda b: m[b][k])
        return f"{m[JOINT][k]:.3f} / {m['qp (paper)'][k]:.3f} / {m[best][k]:.3f} ({best})"

    for name, m in mean_by.items():
        out.append(f"| {name} | " + " | ".join(cell(m, k) for k in ks) + " |")
    avg = []
    for k in ks:
        have = [m for m in mean_by.values() if k in m[JOINT]]
        if not have:
            avg.append("-")
            continue
        mean = {label: float(np.mean([m[label][k] for m in have])) for label in METHODS}
        avg.append(f"{mean[JOINT]:.3f} / {mean['qp (paper)']:.3f} / {max(mean[b] for b in BASELINES):.3f} "
                   f"({len(have)} users)")
    out.append("| average | " + " | ".join(avg) + " |")
    t = r["timing"]
    out += ["", "## Fitting vs scoring cost", "",
            f"Scoring one CNN/DM pair (two summaries under {len(r['attributes']) + 1} prompts, no cache): "
            f"{t['score_one_pair_cpu_s']:.1f} CPU s. The profile's model on a whole train pool (cross-validated "
            "with each family alone, 5 folds x 2 repeats, then the final fit):", "", "| user | pairs | CPU s |", "|---|---|---|"]
    out += [f"| {name} | {f['pairs']} | {f['cpu_s']:.2f} |" for name, f in t["choose"].items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
