"""Time to a 50-pair profile: `drift-cpp approximate` from a cold start, as a new user runs it.

    python benchmarks/profile_time.py [--slm default --slm qwen-0.5b] [--exhaustive default] [--threads 1]

Each configuration runs the real CLI in a subprocess with --no-cache (nothing scored before
counts), at the default fit (attribute screening, 64 response tokens). The wall time includes
loading the model; the profile records the scoring cost (tokens evaluated, seconds).

Pairs: one DSP persona (Cheng et al. 2023, "Everyone Deserves A Reward", arXiv 2309.03126,
CC BY-NC 4.0): its response to each of the data's first queries preferred over the other four
styles, the first --pairs of them. Writes benchmarks/results/profile_time-<N>thread(s).md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drift_cpp.fileio import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from dsp_fewshot import DEFAULT_DATA, STYLES, load_dsp  # noqa: E402
from run_info import command_line, git_rev, log  # noqa: E402

TARGET_MIN = {"default": 5, "qwen-0.5b": 15}  # issue 14's targets for a 50-pair profile


def write_pairs(path: Path, persona: str, n: int) -> None:
    lines = []
    for row in load_dsp(DEFAULT_DATA):
        chosen = row["responses"][persona]
        for style in STYLES:
            rejected = row["responses"][style]
            if style != persona and chosen.strip() and rejected.strip() and rejected != chosen:
                lines.append(json.dumps({"prompt": row["query"], "chosen": chosen,
                                         "rejected": rejected}))
        if len(lines) >= n:
            break
    path.write_text("\n".join(lines[:n]) + "\n")


def run_one(pairs: Path, slm: str, exhaustive: bool, threads: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "drift_cpp.cli", "--threads", str(threads), "approximate", str(pairs),
           "-o", str(out), "--no-cache", "--json"] + ([] if slm == "default" else ["--slm", slm])
    cmd += ["--exhaustive"] if exhaustive else []
    load, start = os.getloadavg()[0], time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1]}")
    cost = json.loads(out.read_text())["cost"]
    return {"slm": slm, "exhaustive": exhaustive, "wall_s": wall, "scoring_s": cost["seconds"],
            "tokens_evaluated": cost["tokens_evaluated"], "load_before": load, "load_after": os.getloadavg()[0]}


def markdown(results: dict) -> str:
    out = ["# Time to a 50-pair profile", "", results["citation"], "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- {results['pairs']} pairs of the `{results['persona']}` persona; `drift-cpp --threads "
           f"{results['threads']} approximate --no-cache`, default fit unless exhaustive",
           f"- note: {results['note'] or '-'}", "",
           "| sLM | fit | wall time | scoring | tokens evaluated | tokens/s | target | load avg (start, end) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        target = "" if r["exhaustive"] else f"<= {TARGET_MIN.get(r['slm'], '-')} min"
        out.append(f"| {r['slm']} | {'exhaustive' if r['exhaustive'] else 'screened (default)'} | "
                   f"{r['wall_s'] / 60:.1f} min | {r['scoring_s'] / 60:.1f} min | {r['tokens_evaluated']:,} | "
                   f"{r['tokens_evaluated'] / r['scoring_s']:.0f} | {target} | "
                   f"{r['load_before']:.1f}, {r['load_after']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slm", action="append", help="sLM preset or path, repeatable ('default': the embedded model)")
    ap.add_argument("--exhaustive", action="append", default=[], help="also time --exhaustive with this sLM")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--persona", choices=[s for s in STYLES if s != "normal"], default="academy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    if not args.out.is_dir() or not os.access(args.out, os.W_OK):
        raise SystemExit(f"error: --out {args.out}: not a writable directory")
    configs = [(s, False) for s in args.slm or ["default", "qwen-0.5b"]] + [(s, True) for s in args.exhaustive]
    results = {"citation": 'DSP data: Cheng et al. 2023, "Everyone Deserves A Reward" (arXiv 2309.03126), '
                           "CC BY-NC 4.0.", "command": command_line(__file__, argv), "git_rev": git_rev(),
               "pairs": args.pairs, "persona": args.persona, "threads": args.threads, "note": args.note, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        write_pairs(pairs, args.persona, args.pairs)
        for slm, exhaustive in configs:
            log(f"{slm}{' exhaustive' if exhaustive else ''}: scoring {args.pairs} pairs")
            results["runs"].append(run_one(pairs, slm, exhaustive, args.threads, Path(tmp) / "profile.json"))
            log(f"  {results['runs'][-1]['wall_s'] / 60:.1f} min")
    stem = f"profile_time-{args.threads}thread{'s' if args.threads > 1 else ''}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(args.out / f"{stem}.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
