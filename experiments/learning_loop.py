#!/usr/bin/env python
"""Learning from picks, end to end (issue 25): simulated users drive chat's learning loop.

A simulated user is a judge with a hidden preference (generation_judges.py's transparent judges, and
`long`, the reverse of `short`). It chats through the code path of `drift-cpp chat --learn 1`:
steer/questions.Learner asks two answers to a prompt (by one of the question strategies), the user
picks by its judge, skipping near-ties, and the Learner records the pick into a profile's pairs file
(fit/learning.add) exactly as chat does. Each turn is a new one-turn conversation.

After each checkpoint's number of picks the profile is frozen (copied) and decodes the held-out prompts
greedily; the judge compares each answer with plain decoding's (win 1, tie 0.5, loss 0). Beside the
win rate stands the fit's own cross-validated accuracy on its picks (choice.py's CV of the chosen
model): the gap between them is what is lost between learning and showing.

Protocol (nothing is tuned on the held-out prompts):
  * training prompts: generation_judges.TRAIN_PROMPTS (40), in a random order per seed, cycled;
    held-out prompts: the first --held-out of generation_judges.HELD_OUT_PROMPTS.
  * turn t of seed s samples at chat's defaults (temperature 0.8, top-p 0.9) with seed
    1,000,003 s + 16 t (+1, +2, ... for further candidates), up to --max-tokens tokens.
  * a run (judge, strategy, seed) stops at the last checkpoint's picks or after --max-turns-factor
    times as many turns.
  * 95% intervals: a cluster bootstrap (seeds, then held-out prompts within a seed), 2,000 draws.

Resumable: each finished run is written to RUN/result.json atomically and skipped by a rerun; an
unfinished run starts again (its scores are in the score cache, its held-out answers in
generations.jsonl). Outputs under --out: results.json, results.md, learning_curves.png.

    python experiments/learning_loop.py --threads 1 --out /tmp/loop   # the default budget: short, 10 picks, ~13 min
    python experiments/learning_loop.py --threads 1 --judges short --strategies samples \\
        --checkpoints 0,6 --held-out 4 --max-tokens 24 --out /tmp/loop-tiny   # the test's budget
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np

from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from generation_judges import (HELD_OUT_PROMPTS, JUDGE_DESCRIPTIONS, JUDGES, SMOKE_ATTRIBUTES, TRAIN_PROMPTS,
                               Answer, GenerationLog, compare, mean_word_length, n_list_lines, n_words)
from run_info import REPO, command_line, git_rev, log, run


# ---------------------------------------------------------------------------- simulated users
def judge_long(a: Answer) -> float:
    """More words is better; a cut answer is at least max_tokens long, so it beats any answer that ended."""
    return float(n_words(a.text)) if a.ended else math.inf


USERS = {**JUDGES, "long": judge_long}
USER_DESCRIPTIONS = {**JUDGE_DESCRIPTIONS, "long": "more words; a cut answer beats one that ended, two cut ones tie"}
# A near-tie is skipped, as a person would: two lengths within 10% (one e-fold is 100%), mean word
# lengths within 0.1 letters, or the judge's own tie ('!' per sentence, list lines: equal counts).
NEAR_LOG_LENGTH, NEAR_WORD_LENGTH = 0.1, 0.1


def near_tie(user: str, a: Answer, b: Answer) -> bool:
    if not a.text.strip() or not b.text.strip() or compare(USERS[user], a, b) == 0.5:
        return True
    if user in ("short", "long") and a.ended and b.ended:
        return abs(math.log1p(n_words(a.text)) - math.log1p(n_words(b.text))) < NEAR_LOG_LENGTH
    if user == "plain_words" and None not in (ma := mean_word_length(a.text), mb := mean_word_length(b.text)):
        return abs(ma - mb) < NEAR_WORD_LENGTH  # (a text without words loses, as the judge says)
    return False


def pick(user: str, a: Answer, b: Answer) -> Optional[int]:
    """1 or 2 by the user's judge; None: a near-tie, skipped."""
    return None if near_tie(user, a, b) else 1 if compare(USERS[user], a, b) == 1.0 else 2


# ---------------------------------------------------------------------------- statistics
def cluster_bootstrap(outcomes: list[list[float]], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean outcome: seeds drawn with replacement, then prompts within each."""
    rng = np.random.default_rng(seed)
    groups = [np.asarray(o, dtype=float) for o in outcomes if len(o)]
    if not groups:
        return (math.nan, math.nan)
    means = np.empty(draws)
    for d in range(draws):
        chosen = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        means[d] = np.mean(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in chosen]))
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------------------- one run
class Loop:
    """Models, scorer, plain held-out answers and settings shared by every run."""

    def __init__(self, args):
        from drift_cpp.models import ModelOptions, load_model
        from drift_cpp.params import Sampling
        from drift_cpp.score.attributes import builtin_attributes
        from drift_cpp.score.cache import ScoreCache
        from drift_cpp.score.scorer import Scorer
        from drift_cpp.steer.session import Drift

        self.args = args
        self.options = ModelOptions(threads=args.threads)
        self.llm_name, self.slm_name = args.llm or args.model, args.slm or args.model
        llm, slm = load_model(self.llm_name, self.options), load_model(self.slm_name, self.options)
        self.identity = {"llm": llm.identity, "slm": slm.identity}
        self.fingerprint = (slm.identity["sha256"] if llm.same_as(slm.identity)
                            else f"{llm.identity['sha256']}/{slm.identity['sha256']}")
        attrs = builtin_attributes()
        self.attributes = attrs if args.attributes == "all" else attrs.select(include=args.attributes.split(","))
        self.cache = ScoreCache(args.cache)
        self.scorer = Scorer(slm, cache=self.cache)  # chat's scorer: the default response tokens
        self.held_out = HELD_OUT_PROMPTS[: args.held_out]
        self.eval_sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
        self.glog = GenerationLog(args.out / "generations.jsonl")
        plain = Drift(self.llm_name, self.llm_name, options=self.options)
        self.plain = [self.glog.generate(plain, q, self.eval_sampling, self.fingerprint)[0] for q in self.held_out]
        log(f"held-out plain answers: {sum(a.ended for a in self.plain)} / {len(self.plain)} ended "
            f"before {args.max_tokens} tokens")

    def session(self, profile):
        """chat's session: plain decoding until the profile steers, plain beside it (compare) always."""
        from drift_cpp.fit import learning
        from drift_cpp.steer.session import Drift
        steering = profile if learning.steers(profile) else None
        return Drift(self.llm_name, self.slm_name, profile=steering, beta=self.args.beta, options=self.options,
                     compare=True)

    def evaluate(self, user: str, profile) -> dict:
        """The frozen profile's greedy answers on the held-out prompts against plain decoding's."""
        from drift_cpp.fit import learning
        from drift_cpp.steer.session import Drift
        if not learning.steers(profile):  # it decodes plain: the same answers, all ties
            answers = self.plain
        else:
            drift = Drift(self.llm_name, self.slm_name, profile=profile, beta=self.args.beta, options=self.options)
            answers = [self.glog.generate(drift, q, self.eval_sampling, self.fingerprint)[0] for q in self.held_out]
        outcomes = [compare(USERS[user], a, p) for a, p in zip(answers, self.plain)]
        c = None if profile is None else profile.choice
        return {"outcomes": outcomes, "win_rate": float(np.mean(outcomes)),
                "ended": sum(a.ended for a in answers),
                "cv_accuracy": None if c is None else c.accuracy,
                "family": None if c is None else list(c.family),
                "length_weight": None if profile is None else profile.length_weight(),
                "steering": [] if profile is None else [[a.id, w] for a, w in profile.decoding_weights()]
                if profile.uses_attributes() else [],
                "example": {"prompt": self.held_out[0], "answer": answers[0].text}}

    def run(self, user: str, strategy: str, seed: int) -> dict:
        from drift_cpp.params import Sampling
        from drift_cpp.steer.questions import Learner

        args = self.args
        where = args.out / "runs" / f"{user}-{strategy}-s{seed}"
        done = where / "result.json"
        settings = {k: getattr(args, k) for k in ("max_tokens", "held_out", "beta", "k", "max_turns_factor", "checkpoints")}
        settings |= {"attributes": list(self.attributes.ids), "models": self.fingerprint}
        if done.exists():
            finished = json.loads(done.read_text("utf-8"))
            if finished.get("settings") != settings:
                raise DriftError(f"{done} was made with other settings ({finished.get('settings')}): use another --out")
            return finished
        if where.exists():  # an interrupted run starts again
            shutil.rmtree(where)
        (where / "frozen").mkdir(parents=True)
        target = where / "profile.json"
        learner = Learner(target, lambda: self.scorer, self.attributes, strategy, k=args.k)
        checkpoints = sorted(set(args.checkpoints))
        order = np.random.default_rng(seed).permutation(len(TRAIN_PROMPTS))
        max_turns = args.max_turns_factor * max(checkpoints[-1], 1)
        result = {"user": user, "strategy": strategy, "seed": seed, "settings": settings, "checkpoints": {}, "picks": []}
        if checkpoints[0] == 0:
            result["checkpoints"]["0"] = self.evaluate(user, None)
        profile, drift, turn, skipped, t0 = None, self.session(None), 0, 0, time.monotonic()
        while len(result["picks"]) < checkpoints[-1] and turn < max_turns:
            prompt = TRAIN_PROMPTS[order[turn % len(order)]]
            sampling = Sampling(max_tokens=args.max_tokens, seed=(1_000_003 * seed + 16 * turn) % 2**32)
            asked = time.perf_counter()
            question = learner.ask(drift, [{"role": "user", "content": prompt}], sampling)
            asked = time.perf_counter() - asked
            turn += 1
            chosen = pick(user, *(Answer(t, e) for t, e in zip(question.answers, question.ended)))
            if chosen is None:
                skipped += 1
                continue
            started = time.perf_counter()
            update = learner.record(question, chosen)
            seconds = time.perf_counter() - started
            if update is None or not update.changed:  # the same two texts, or a pair learned before
                skipped += 1
                continue
            profile = update.profile
            n = profile.n_pairs
            result["picks"].append({"turn": turn, "asked": question.strategy, "margin": question.margin,
                                    "ask_seconds": asked, "record_seconds": seconds, "change": learner.changes[-1][1],
                                    "settled": learner.settled(), "cv_accuracy": profile.choice.accuracy,
                                    "length_weight": profile.length_weight()})
            log(f"  [{user}/{strategy}/s{seed}] pick {n} at turn {turn} ({skipped} skipped), recorded in "
                f"{seconds:.1f} s, change {learner.changes[-1][1]}")
            if str(n) in map(str, checkpoints):
                shutil.copy(target, where / "frozen" / f"profile-{n}.json")
                result["checkpoints"][str(n)] = self.evaluate(user, profile)
                log(f"  [{user}/{strategy}/s{seed}] {n} picks: win rate {result['checkpoints'][str(n)]['win_rate']:.2f}"
                    f", CV accuracy {profile.choice.accuracy}")
            drift = self.session(profile)
        result.update(turns=turn, skipped=skipped, seconds=time.monotonic() - t0,
                      settled=next((p["settled"] for p in result["picks"] if p["settled"]), None))
        atomic_write_text(done, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        return result


# ---------------------------------------------------------------------------- report
def summarize(runs: list[dict], users, strategies, checkpoints) -> dict:
    table = {}
    for u in users:
        for s in strategies:
            rows = {}
            for c in checkpoints:
                got = [r["checkpoints"][str(c)] for r in runs if r["user"] == u and r["strategy"] == s
                       and str(c) in r["checkpoints"]]
                if not got:
                    continue
                outcomes = [g["outcomes"] for g in got]
                cv = [g["cv_accuracy"] for g in got if g["cv_accuracy"] is not None]
                win = float(np.mean(np.concatenate(outcomes)))
                rows[str(c)] = {"win_rate": win, "ci95": cluster_bootstrap(outcomes), "seeds": len(got),
                                "cv_accuracy": float(np.mean(cv)) if cv else None,
                                "gap": float(np.mean(cv)) - win if cv else None}
            mine = [r for r in runs if r["user"] == u and r["strategy"] == s]
            if rows:
                picks = [p for r in mine for p in r["picks"]]
                table[f"{u}/{s}"] = {
                    "user": u, "strategy": s, "checkpoints": rows,
                    "turns": sum(r["turns"] for r in mine), "skipped": sum(r["skipped"] for r in mine),
                    "record_seconds_median": float(np.median([p["record_seconds"] for p in picks])) if picks else None,
                    "settled": [r["settled"] for r in mine]}
    return table


def _cell(row: Optional[dict]) -> str:
    if row is None:
        return "–"
    lo, hi = row["ci95"]
    return f"{row['win_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def markdown(results: dict) -> str:
    c, table = results["config"], results["summary"]
    cps = c["checkpoints"]
    out = ["# Learning from picks, end to end (issue 25)", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- models: LLM {results['models']['llm']['name']}, sLM {results['models']['slm']['name']}",
           f"- {len(c['attributes'])} attributes ({', '.join(c['attributes'])}), beta {c['beta']}, answers up to "
           f"{c['max_tokens']} tokens, {c['held_out']} held-out prompts (greedy), seeds {c['seeds']}",
           f"- held-out plain answers that ended before {c['max_tokens']} tokens: {results['plain_ended']} / {c['held_out']}",
           f"- time: {results['seconds']:.0f} s (of the runs)",
           "- record s: learning.add's time per pick, scoring included; a pair scored before (by an earlier run, "
           "or by the active strategy's question) is read from the score cache", "",
           "Win rate of the frozen profile's answers over plain decoding's on the held-out prompts (tie 0.5), "
           "with a 95% cluster-bootstrap interval over seeds and prompts:", "",
           "| user | strategy | " + " | ".join(f"{k} picks" for k in cps) + " | turns (skipped) | record s (median) | settled at |",
           "|---|---|" + "---|" * len(cps) + "---|---|---|"]
    for row in table.values():
        out.append(f"| {row['user']} | {row['strategy']} | " + " | ".join(_cell(row["checkpoints"].get(str(k))) for k in cps)
                   + f" | {row['turns']} ({row['skipped']}) | {row['record_seconds_median'] or 0:.1f} | "
                   + ", ".join(str(s) if s else "–" for s in row["settled"]) + " |")
    out += ["", "Transfer: the fit's cross-validated accuracy on its own picks beside the win rate of its answers "
            "(gap = CV − win):", "",
            "| user | strategy | " + " | ".join(f"{k} picks: CV / win / gap" for k in cps if k) + " |",
            "|---|---|" + "---|" * len([k for k in cps if k])]
    for row in table.values():
        cells = []
        for k in (k for k in cps if k):
            r = row["checkpoints"].get(str(k))
            cells.append("–" if r is None or r["cv_accuracy"] is None else
                         f"{r['cv_accuracy']:.2f} / {r['win_rate']:.2f} / {r['gap']:+.2f}")
        out.append(f"| {row['user']} | {row['strategy']} | " + " | ".join(cells) + " |")
    if results.get("plot"):
        out += ["", f"![learning curves]({results['plot']})"]
    out += ["", "Users: " + "; ".join(f"`{u}`: {USER_DESCRIPTIONS[u]}" for u in c["users"]) + "."]
    return "\n".join(out) + "\n"


PLOT = "learning_curves.png"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from drift_cpp.fileio import save_figure
    users = results["config"]["users"]
    fig, axes = plt.subplots(1, len(users), figsize=(3.6 * len(users), 3.4), squeeze=False, sharey=True)
    for ax, u in zip(axes[0], users):
        for j, row in enumerate(r for r in results["summary"].values() if r["user"] == u):
            ks = sorted(int(k) for k in row["checkpoints"])
            rows = [row["checkpoints"][str(k)] for k in ks]
            ys = [r["win_rate"] for r in rows]
            err = [[y - r["ci95"][0] for y, r in zip(ys, rows)], [r["ci95"][1] - y for y, r in zip(ys, rows)]]
            ax.errorbar([k + 0.3 * j for k in ks], ys, yerr=err, marker="o", capsize=3, label=row["strategy"])  # apart
        ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_title(u)
        ax.set_xlabel("picks")
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("win rate over plain (held-out)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv=None):
    from drift_cpp.steer.questions import STRATEGIES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "learning_loop")
    ap.add_argument("--users", "--judges", dest="users", default="short",
                    help=f"simulated users (judges), comma-separated, of {', '.join(USERS)}")
    ap.add_argument("--strategies", default="personalized",
                    help=f"question strategies, comma-separated, of {', '.join(STRATEGIES)}")
    ap.add_argument("--seeds", type=_ints, default=[0], help="seeds, comma-separated")
    ap.add_argument("--checkpoints", type=_ints, default=[0, 5, 10], help="picks at which the profile is frozen")
    ap.add_argument("--held-out", type=int, default=4, help="held-out prompts (of 20)")
    # SmolLM2 rarely ends an answer: at 96 tokens the short user found 3 decisive pairs in 33 turns, at 192 10 in 33.
    ap.add_argument("--max-tokens", type=int, default=192, help="tokens per answer, in the loop and held out")
    ap.add_argument("--max-turns-factor", type=int, default=4, help="turns allowed per pick of the last checkpoint")
    ap.add_argument("--attributes", default=",".join(SMOKE_ATTRIBUTES),
                    help="attribute ids the profiles score (comma-separated), or 'all' (41; slow)")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=4, help="candidates the active strategy draws")
    ap.add_argument("--cache", type=Path, default=None, help="score cache (default: drift-cpp's)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--llm", default=None)
    ap.add_argument("--slm", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="write the report from the finished runs; run nothing")
    args = ap.parse_args(argv)
    args.users, args.strategies = args.users.split(","), args.strategies.split(",")
    if bad := [u for u in args.users if u not in USERS]:
        raise DriftError(f"--users: unknown {', '.join(bad)} (choose from {', '.join(USERS)})")
    if bad := [s for s in args.strategies if s not in STRATEGIES]:
        raise DriftError(f"--strategies: unknown {', '.join(bad)} (choose from {', '.join(STRATEGIES)})")
    if not args.checkpoints or min(args.checkpoints) < 0 or not 1 <= args.held_out <= len(HELD_OUT_PROMPTS):
        raise DriftError("--checkpoints must be >= 0 and --held-out within 1..20")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command, rev, t0 = command_line(__file__, argv), git_rev(), time.monotonic()
    loop = Loop(args)
    runs = []
    for seed in args.seeds:  # seed-major: a cut-short run still has every user and strategy once
        for user in args.users:
            for strategy in args.strategies:
                done = args.out / "runs" / f"{user}-{strategy}-s{seed}" / "result.json"
                if args.report:
                    runs += [json.loads(done.read_text("utf-8"))] if done.exists() else []
                    continue
                log(f"run {user}/{strategy}/seed {seed}")
                runs.append(loop.run(user, strategy, seed))
    loop.glog.close()
    seconds = sum(r["seconds"] for r in runs) if args.report else time.monotonic() - t0  # the runs' own time
    results = {"command": command, "git_rev": rev, "models": loop.identity, "seconds": seconds,
               "plain_ended": sum(a.ended for a in loop.plain),
               "config": {"users": args.users, "strategies": args.strategies, "seeds": args.seeds,
                          "checkpoints": sorted(set(args.checkpoints)), "held_out": args.held_out,
                          "max_tokens": args.max_tokens, "max_turns_factor": args.max_turns_factor,
                          "attributes": list(loop.attributes.ids), "beta": args.beta, "k": args.k,
                          "near_log_length": NEAR_LOG_LENGTH, "near_word_length": NEAR_WORD_LENGTH},
               "summary": summarize(runs, args.users, args.strategies, sorted(set(args.checkpoints))),
               "runs": runs}
    if plot(results, args.out / PLOT):
        results["plot"] = PLOT
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(args.out / "results.md", markdown(results))
    log(f"wrote {args.out / 'results.md'}")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    run(main)
