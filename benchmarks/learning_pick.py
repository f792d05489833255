#!/usr/bin/env python
"""Time to learn one pick (issue 25's target: under 2 s on the embedded model).

A pick is what `chat --learn` records, in two steps (steer/questions.Learner.save_pick): it is kept
at once (fit/learning.save: checked to be scorable, written to the pairs file), then learned in the
background while the person types (fit/learning.add: the pair scored, the profile refitted, family
choice and its cross-validation included, and written). The N earlier pairs are scored through a
throwaway cache first; each timed pick is new text, scored with no cache, then undone, so every
repetition starts from the same N pairs. Reported: the median and range of each step, of the
scoring within the second, and the sLM's milliseconds per token scored, per attribute set, with
the machine's load average.

    python benchmarks/learning_pick.py --threads 1 [--pairs 12] [--reps 3] [--attributes all|ids]
Writes benchmarks/results/learning_pick.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from drift_cpp.fileio import atomic_write_text
from drift_cpp.fit import learning
from drift_cpp.models import ModelOptions, load_model
from drift_cpp.preferences import pair_from
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer

OUT = Path(__file__).resolve().parent / "results"
TOPICS = ["the ocean", "bread", "bicycles", "sleep", "rain", "music", "maps", "tea", "stars", "gardens", "trains",
          "bees", "snow", "clocks", "paper", "glass", "salt", "wind", "caves", "kites"]


def pair(i: int, tag: str):
    """A pick between a short and a longer answer about topic i (new text for each tag)."""
    topic = TOPICS[i % len(TOPICS)]
    short = f"{topic.capitalize()} is worth a look ({tag} {i})."
    long = (f"Here is a fuller answer about {topic} ({tag} {i}). It has a history, a few surprising facts and "
            f"some practical tips, which I will go through one by one so that nothing is left out.")
    return pair_from({"prompt": f"Tell me about {topic}.", "chosen": short, "rejected": long}, f"bench {tag} {i}")


def measure(model, attrs, n_pairs: int, reps: int, work: Path) -> dict:
    target = work / "me.json"
    setup = Scorer(model, cache=ScoreCache(work / "cache.sqlite"))
    for i in range(n_pairs):
        learning.add(target, [pair(i, "setup")], setup, attrs)
    fresh = Scorer(model, cache=None)  # the timed pick's pair is new text: nothing cached
    rows = []
    for r in range(reps):
        before = fresh.cost
        start = time.perf_counter()
        learning.save(target, [pair(n_pairs + r, f"timed {time.time_ns()}")], fresh, attrs)
        kept = time.perf_counter()
        learning.add(target, [], fresh, attrs)  # learns what the pairs file holds and the profile lacks
        learned = time.perf_counter() - kept
        cost = fresh.cost - before
        rows.append({"kept_s": kept - start, "learned_s": learned, "scoring_s": cost.seconds,
                     "fit_and_files_s": learned - cost.seconds, "tokens": cost.tokens_evaluated,
                     "ms_per_token": 1000 * cost.seconds / max(cost.tokens_evaluated, 1)})
        learning.undo(target)
    def spread(key):
        xs = [row[key] for row in rows]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
    return {"attributes": len(attrs), "pairs_before": n_pairs, "reps": rows,
            **{k: spread(k) for k in rows[0]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=12, help="pairs in the profile before the timed pick")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attributes", action="append",
                    help="'all' (chat's default) or comma-separated ids; repeatable [default: all, and the "
                         "six of experiments/learning_loop.py]")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sets = args.attributes or ["all", "formal,concise,energy,easy,analytic,exclamatory"]
    model = load_model(None, ModelOptions(threads=args.threads))
    load_before, results = os.getloadavg()[0], []
    for spec in sets:
        attrs = builtin_attributes() if spec == "all" else builtin_attributes().select(include=spec.split(","))
        with tempfile.TemporaryDirectory() as work:
            results.append(measure(model, attrs, args.pairs, args.reps, Path(work)) | {"set": spec})
        print(json.dumps(results[-1]["learned_s"]), flush=True)
    report = {"when": time.strftime("%Y-%m-%d %H:%M"), "model": model.path.name, "threads": args.threads,
              "load_before": load_before, "load_after": os.getloadavg()[0], "results": results}
    lines = ["# Time to learn one pick (chat --learn: the pick kept at once, then learned while the person types)", "",
             f"{report['when']}, {model.path.name}, {args.threads} thread(s); load average {load_before:.1f} at the "
             f"start, {report['load_after']:.1f} at the end. Median (min-max) of {args.reps} picks, each into a "
             f"profile of {args.pairs} pairs, its pair scored with no cache. Target: under 2 s.", "",
             "| attributes | kept s (chat waits) | learned s (background) | of which scoring s | fit and files s "
             "| tokens scored | ms per token |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        f = lambda k, d=2: f"{r[k]['median']:.{d}f} ({r[k]['min']:.{d}f}-{r[k]['max']:.{d}f})"  # noqa: E731
        lines.append(f"| {r['set'] if r['set'] == 'all' else 'six: ' + r['set']} ({r['attributes']}) | {f('kept_s')} "
                     f"| {f('learned_s')} | {f('scoring_s')} | {f('fit_and_files_s')} | {f('tokens', 0)} "
                     f"| {f('ms_per_token', 1)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "learning_pick.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "learning_pick.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
