#!/usr/bin/env python
"""Attribute screening and response truncation, chosen by evidence (docs/screening.md).

Reads the per-token rewards experiments/screening_scores.py wrote and, without scoring
anything again:
  * truncation: test accuracy of the exhaustive default fit when responses are scored on
    their first 32, 64, 128 tokens (and all of those scored);
  * screening: replays drift-cpp's own screening (drift_cpp.fit.screening, the code `approximate`
    runs) on the exhaustive rewards, for a grid of constants: which entries it would have
    scored, what those cost in tokens, and the test accuracy of the fit it would have made.

Protocol (DSP, Cheng et al. 2023, CC BY-NC 4.0): each persona prefers its own style's response
over the other four. CNN/DM (Stiennon et al. 2020): one named worker's own summary comparisons,
summaries whole; the articles play the queries' part. The scored queries are split into folds by query; each fold's pairs are
the test pool of a profile fitted on the other folds' pairs, which arrive in a random order
(several seeds: screening depends on the order). Accuracy is pooled over personas, folds and
orders; its 95% interval, and that of the difference to exhaustive, come from a bootstrap over
queries (the pairs of one query share a response, so they are not independent).

Tokens: each distinct (query, system prompt) costs its prompt tokens once (the native scorer shares
it between the responses), and each (response, system prompt) item its response tokens; an item shared
by pairs (a DSP chosen response) counts once per profile.

    python experiments/screening.py --out benchmarks/results
    python experiments/screening.py --data cnndm --truncation 0 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from drift_cpp.fit import approximation, screening
from drift_cpp.fileio import atomic_write_text
from drift_cpp.fit.screening import ScreenOptions
from dsp_fewshot import PERSONAS, STYLES
from run_info import command_line, git_rev, log, run
from screening_scores import DEFAULT_WORK

CITATIONS = {"dsp": 'DSP data: Cheng et al. 2023, "Everyone Deserves A Reward: Learning Customized Human '
                    'Preferences" (arXiv 2309.03126), CC BY-NC 4.0',
             "cnndm": 'CNN/DM data: Stiennon et al. 2020, "Learning to summarize from human feedback" '
                      "(summarize-from-feedback, Modified MIT license; articles from CNN/DailyMail)"}
TITLES = {"dsp": "DSP", "cnndm": "CNN/DM"}
TRUNCATIONS = (32, 64, 128)
N_FOLDS = 4
ORDERS = 3        # arrival orders (seeds) of the training pairs per fold
BOOTSTRAP = 2000
TOP = 7           # decoding attributes: FitOptions.top's default
# block is not tuned: it trades how fresh a decision is against batching, and costs nothing in tokens.
GRID = dict(n0=(4, 6, 8, 10), keep=(0, 2, 4, 6), explore=(0, 1, 2), block=(8,))
TOLERANCE = 0.01  # the target: accuracy within 1 point of exhaustive
BUDGET = 0.40     # the fallback's share of tokens (docs/screening.md says why there is a fallback)


def choose(rows: list[dict]) -> dict:
    """The rule fixed before the results: among the configurations within TOLERANCE of exhaustive
    accuracy, the one with the smallest share of tokens on the whole pool. On DSP none was within
    TOLERANCE, so a fallback was added after seeing the table: the most accurate configuration
    using at most BUDGET of the tokens on the whole pool."""
    close = [r for r in rows if r["diff"] >= -TOLERANCE]
    if close:
        return min(close, key=lambda r: (round(r["whole_pool"]["token_fraction"], 3), -r["accuracy"]))
    cheap = [r for r in rows if r["whole_pool"]["token_fraction"] <= BUDGET] or rows
    return max(cheap, key=lambda r: (r["accuracy"], -r["whole_pool"]["token_fraction"]))
N_PROMPTS = 42


class Data:
    """Rewards of every scored response at a truncation, the tokens each item costs, and the users' pairs:
    DSP's four personas, or the CNN/DM worker whose comparisons were scored."""

    def __init__(self, path: Path):
        with np.load(path, allow_pickle=False) as z:
            self.meta = json.loads(str(z["meta"]))
            self.lp = {k[3:]: z[k] for k in z.files if k.startswith("lp|")}
            self.n_prompt = {k[3:]: int(z[k][0]) for k in z.files if k.startswith("np|")}
            self.cap = {k[4:]: int(z[k][0]) for k in z.files if k.startswith("cap|")}
        self.items = [i for i in self.meta["items"] if all(f"{i}|{j}" in self.lp for j in range(N_PROMPTS))]
        self.queries = sorted({i.split("/")[0] for i in self.items})
        self.users = [self.meta["worker"]] if self.meta["data"] == "cnndm" else list(PERSONAS)

    def columns_scored_to(self, t: int) -> list[int]:
        """The attributes whose items (and the base prompt's) were all scored on at least t response tokens."""
        def full(j):
            return all(self.cap[f"{item}|{j}"] >= t for item in self.items)
        return [j - 1 for j in range(1, N_PROMPTS) if full(j)] if full(0) else []

    def rewards(self, t) -> dict:
        """{item: (41,) summed log-ratio to the base prompt over the first t response tokens}."""
        out = {}
        for item in self.items:
            sums = np.array([float(np.sum(self.lp[f"{item}|{j}"][:t or None], dtype=np.float64))
                             for j in range(N_PROMPTS)])
            out[item] = sums[1:] - sums[0]
        return out

    def tokens(self, t) -> dict:
        """{item: ((42,) prompt tokens, (42,) response tokens scored) under each prompt, at truncation t}."""
        return {item: (np.array([self.n_prompt[f"{item}|{j}"] for j in range(N_PROMPTS)]),
                       np.array([len(self.lp[f"{item}|{j}"][:t or None]) for j in range(N_PROMPTS)]))
                for item in self.items}

    def pairs(self, user: str) -> list[tuple[str, str, str]]:
        """(query, chosen item, rejected item) of a user: a DSP persona or the CNN/DM worker."""
        if self.meta["data"] == "cnndm":
            return [tuple(p) for p in self.meta["pairs"] if p[1] in self.items and p[2] in self.items]
        persona, out = user, []
        for q in self.queries:
            chosen = f"{q}/{persona}"
            if chosen in self.items:
                out += [(q, chosen, f"{q}/{s}") for s in STYLES if s != persona and f"{q}/{s}" in self.items]
        return out


def fit(W, L):
    return approximation.fit(W, L)  # the default fit: bt, l2 = 1000, sum


def replay(W, L, options: ScreenOptions | None):
    """The entries screening would score for pairs arriving in this order, and its fit (p)."""
    if options is None:
        return np.ones(W.shape, dtype=bool), fit(W, L)
    Ws, Ls = np.zeros((0, W.shape[1])), np.zeros((0, W.shape[1]))
    for a, b in screening.blocks(0, len(W), options):
        cols = screening.block_columns(Ws, Ls, a, b - a, TOP, options, fit)
        mask = np.zeros((b - a, W.shape[1]), dtype=bool)
        for r, c in enumerate(cols):
            mask[r, c] = True
        Ws, Ls = np.vstack([Ws, np.where(mask, W[a:b], np.nan)]), np.vstack([Ls, np.where(mask, L[a:b], np.nan)])
    return ~np.isnan(Ws), fit(*screening.impute(Ws, Ls))


def evaluate(data: Data, rewards: dict, tokens: dict, options: ScreenOptions | None) -> dict:
    """Per query: [correct, n] pooled over personas, folds and orders; and tokens per profile."""
    folds = np.array_split(np.random.default_rng(0).permutation(data.queries), N_FOLDS)
    per_query = {q: [0.0, 0] for q in data.queries}
    spent, full, n_train = [], [], []
    for user, fold in itertools.product(data.users, range(N_FOLDS)):
        pairs = data.pairs(user)
        test = [p for p in pairs if p[0] in set(folds[fold])]
        train = [p for p in pairs if p[0] not in set(folds[fold])]
        for order in range(ORDERS):
            rng = np.random.default_rng([order, fold, data.users.index(user)])
            arrived = [train[i] for i in rng.permutation(len(train))]
            W = np.array([rewards[c] for _, c, _ in arrived])
            L = np.array([rewards[r] for _, _, r in arrived])
            mask, p = replay(W, L, options)
            spent.append(cost(arrived, mask, tokens))
            full.append(cost(arrived, np.ones_like(mask), tokens))
            n_train.append(len(arrived))
            for q, c, r in test:
                margin = float((rewards[c] - rewards[r]) @ p)
                per_query[q][0] += (margin > 0) + 0.5 * (margin == 0)
                per_query[q][1] += 1
    return {"per_query": per_query, "tokens": float(np.mean(spent)), "exhaustive_tokens": float(np.mean(full)),
            "n_train": float(np.mean(n_train))}


def whole_pool_cost(data: Data, rewards: dict, tokens: dict, options: ScreenOptions) -> dict:
    """Share of the tokens when a persona's profile is fitted on all of its pairs (the largest n here)."""
    fractions, n, spent, full = [], [], [], []
    for user, order in itertools.product(data.users, range(ORDERS)):
        pairs = data.pairs(user)
        arrived = [pairs[i] for i in np.random.default_rng([order, data.users.index(user)]).permutation(len(pairs))]
        W = np.array([rewards[c] for _, c, _ in arrived])
        L = np.array([rewards[r] for _, _, r in arrived])
        mask, _ = replay(W, L, options)
        spent.append(cost(arrived, mask, tokens))
        full.append(cost(arrived, np.ones_like(mask), tokens))
        fractions.append(spent[-1] / full[-1])
        n.append(len(arrived))
    return {"n_pairs": float(np.mean(n)), "token_fraction": float(np.mean(fractions)),
            "tokens": float(np.mean(spent)), "exhaustive_tokens": float(np.mean(full))}


def cost(arrived, mask, tokens) -> int:
    """Tokens evaluated to score the unique (response, prompt) items: under the base prompt and the scored
    attributes. As in the native scorer, the responses to one query under one system prompt share that
    prompt, which is evaluated once; each item adds its response tokens and the prompt's last token."""
    scored = set()
    for (q, c, r), row in zip(arrived, mask):
        prompts = [0] + [i + 1 for i in np.flatnonzero(row)]
        scored |= {(q, item, j) for item in (c, r) for j in prompts}
    prompts = {(q, j): tokens[item][0][j] for q, item, j in scored}
    return int(sum(prompts.values()) + sum(tokens[item][1][j] + 1 for _, item, j in scored))


def accuracy(per_query: dict, queries) -> float:
    correct = sum(per_query[q][0] for q in queries)
    return correct / max(sum(per_query[q][1] for q in queries), 1)


def intervals(result: dict, reference: dict, queries: list[str]) -> dict:
    """Accuracy, its 95% bootstrap interval over queries, and that of the difference to `reference`."""
    rng = np.random.default_rng(1)
    draws = [rng.choice(queries, size=len(queries)) for _ in range(BOOTSTRAP)]
    acc = [accuracy(result["per_query"], d) for d in draws]
    diff = [accuracy(result["per_query"], d) - accuracy(reference["per_query"], d) for d in draws]
    return {"accuracy": accuracy(result["per_query"], queries), "ci": np.percentile(acc, [2.5, 97.5]).tolist(),
            "diff": accuracy(result["per_query"], queries) - accuracy(reference["per_query"], queries),
            "diff_ci": np.percentile(diff, [2.5, 97.5]).tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=sorted(TITLES), default="dsp", help="which scores of screening_scores.py")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--truncation", type=int, default=64, help="response tokens of the screening study (0: whole responses)")
    ap.add_argument("--tokens-per-second", type=float, required=True,
                    help="the scorer's throughput, to turn tokens into time (measured by the scoring run)")
    ap.add_argument("--rate-note", default="", help="where the throughput was measured")
    ap.add_argument("--render", action="store_true", help="only write screening.md again from screening.json")
    args = ap.parse_args(argv)
    stem = "screening" if args.data == "dsp" else f"screening-{args.data}"
    if args.render:  # the report again, e.g. after the default changed; the numbers stay as measured
        results = json.loads((args.out / f"{stem}.json").read_text())
        default = ScreenOptions().to_dict()
        results["default"] = next((r for r in results["grid"] if r["options"] == default), None)
        results["chosen_by_rule"] = choose(results["grid"])["options"]
        atomic_write_text(args.out / f"{stem}.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(args.out / f"{stem}.md", markdown(results))
        return 0
    start = time.monotonic()
    data = Data(args.work / f"{args.data}.npz")
    log(f"{TITLES[args.data]}: {len(data.items)} responses of {len(data.queries)} queries scored under all {N_PROMPTS} prompts")

    # Truncation: on the attributes scored up to the largest truncation, and on all of them up to the
    # default's (the scores of the rest stop there).
    trunc_rows = {}
    for cols, ts in ((data.columns_scored_to(max(TRUNCATIONS)), TRUNCATIONS),
                     (list(range(N_PROMPTS - 1)), [t for t in TRUNCATIONS if t <= args.truncation])):
        if not cols or not data.meta["cap"]:  # summaries scored whole are never truncated
            continue
        prompts = [0] + [c + 1 for c in cols]  # the base prompt and these attributes' columns of the tokens
        sub = {t: evaluate(data, {i: r[cols] for i, r in data.rewards(t).items()},
                           {i: (n[prompts], m[prompts]) for i, (n, m) in data.tokens(t).items()}, None) for t in ts}
        label = f"{len(cols)} attributes"
        trunc_rows[label] = {str(t): {**intervals(v, sub[ts[-1]], data.queries), "tokens": v["tokens"]}
                             for t, v in sub.items()}
        log(f"truncation on {label}: " + ", ".join(f"{t}: {v['accuracy']:.3f}" for t, v in trunc_rows[label].items()))

    rewards, tokens = data.rewards(args.truncation), data.tokens(args.truncation)
    exhaustive = evaluate(data, rewards, tokens, None)
    rows = []
    for values in itertools.product(*GRID.values()):
        options = ScreenOptions(**dict(zip(GRID, values)))
        r = evaluate(data, rewards, tokens, options)
        rows.append({"options": options.to_dict(), "token_fraction": r["tokens"] / r["exhaustive_tokens"],
                     "whole_pool": whole_pool_cost(data, rewards, tokens, options),
                     **intervals(r, exhaustive, data.queries)})
        log(f"{options}: {rows[-1]['token_fraction']:.3f} of the tokens, accuracy {rows[-1]['accuracy']:.3f}")
    default = ScreenOptions().to_dict()
    results = {
        "citation": CITATIONS[args.data], "title": TITLES[args.data], "command": command_line("experiments/screening.py", argv), "git_rev": git_rev(),
        "data": {"users": data.users, "queries": len(data.queries), "responses": len(data.items), "cap": data.meta["cap"],
                 "model": data.meta["model"], "pairs_per_profile": exhaustive["n_train"]},
        "protocol": {"folds": N_FOLDS, "orders": ORDERS, "bootstrap": BOOTSTRAP, "top": TOP, "fit": "bt l2=1000 sum"},
        "truncation": trunc_rows, "screening_truncation": args.truncation,
        "exhaustive": {**intervals(exhaustive, exhaustive, data.queries), "tokens": exhaustive["exhaustive_tokens"]},
        "grid": rows, "default": next((r for r in rows if r["options"] == default), None),
        "chosen_by_rule": choose(rows)["options"],
        "throughput": {"tokens_per_second": args.tokens_per_second, "note": args.rate_note},
        "analysis_s": time.monotonic() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.out / f"{stem}.md", markdown(results))
    log(f"wrote {args.out / f'{stem}.md'}")
    return 0


def fmt(r: dict) -> str:
    return (f"{r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | {r['diff']:+.3f} "
            f"[{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}]")


def markdown(results: dict) -> str:
    d = results["data"]
    title = results.get("title", "DSP")  # files from before CNN/DM have no title
    cap, unit = (f"first {d['cap']}", "queries") if d["cap"] else ("all", "articles")
    out = [f"# Attribute screening and response truncation on {title}", "", f"{results['citation']}.", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- data: {d['queries']} {unit}, {d['responses']} responses scored under all {N_PROMPTS} prompts "
           f"({cap} response tokens, per token) with {d['model']}; "
           f"{d['pairs_per_profile']:.0f} training pairs per profile on average",
           f"- protocol: {results['protocol']}", "",
           "## Truncation (exhaustive default fit)", ""]
    out += (["| attributes | response tokens | tokens per profile | accuracy [95% CI] | vs the longest [95% CI] |",
             "|---|---|---|---|---|"] if results["truncation"] else ["Not studied here: the summaries are scored whole."])
    for label, rows in results["truncation"].items():
        for t, r in rows.items():
            out.append(f"| {label} | {t} | {r['tokens']:,.0f} | {fmt(r)} |")
    ex = results["exhaustive"]
    t = results["screening_truncation"]
    out += ["", f"## Screening ({f'responses on their first {t} tokens' if t else 'whole responses'})", "",
            f"Exhaustive: accuracy {ex['accuracy']:.3f} [{ex['ci'][0]:.3f}, {ex['ci'][1]:.3f}], "
            f"{ex['tokens']:,.0f} tokens per profile.", "",
            f"Share of tokens: at {d['pairs_per_profile']:.0f} training pairs (the folds), and at "
            f"{results['grid'][0]['whole_pool']['n_pairs']:.0f} (each user's whole pool).", "",
            "| n0 | keep | explore | block | share of tokens | share at the whole pool | accuracy [95% CI] | "
            "vs exhaustive [95% CI] |",
            "|---|---|---|---|---|---|---|---|"]
    default = (results["default"] or {}).get("options")
    if results["default"]:
        w, rate = results["default"]["whole_pool"], results["throughput"]["tokens_per_second"]
        out[-3:-3] = [f"Time to a {w['n_pairs']:.0f}-pair profile at {rate:.0f} tokens/s "
                      f"({results['throughput']['note']}): screened (default) {w['tokens']:,.0f} tokens, "
                      f"{w['tokens'] / rate / 60:.1f} min; exhaustive {w['exhaustive_tokens']:,.0f} tokens, "
                      f"{w['exhaustive_tokens'] / rate / 60:.1f} min.", ""]
    for r in sorted(results["grid"], key=lambda r: r["token_fraction"]):
        o = r["options"]
        mark = (" **(default)**" if o == default else "") + (" (rule)" if o == results["chosen_by_rule"] else "")
        out.append(f"| {o['n0']} | {o['keep']} | {o['explore']} | {o['block']} | {r['token_fraction']:.3f}{mark} | "
                   f"{r['whole_pool']['token_fraction']:.3f} | {fmt(r)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
