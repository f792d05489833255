#!/usr/bin/env python
"""Which settings make the demo's personalized answers coherent (issue: the real pair, item 2).

The demo once printed `Boil an egg: "Boil an egg"` as its personalized answer on the embedded
model. This runs the demo's own data (its 12 pairs, 14 attributes, two prompts, greedy decoding,
120 tokens) over the fit method, the number of steering attributes and beta, and measures each
answer with transparent numbers instead of taste:

  words     whitespace-separated words (the persona wants short answers, so fewer is on target)
  repeats   share of word trigrams that already occurred earlier in the answer (0 = no loop)
  echo      share of the answer's words that are words of the prompt (a parroted prompt scores high)
  ended     whether the answer ended before the token limit

Outputs results.json and results.md under --out. Scores come from the score cache.

    python experiments/demo_settings.py --threads 1 --out docs/results/demo_settings
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from drift_cpp.demo import DEMO_ATTRIBUTES, DEMO_PAIRS, DEMO_PROMPTS
from run_info import command_line, git_rev, log, run, write_results

METHODS = ("qp", "bt")   # the paper's closed form, and the default fit
TOPS = (1, 3, 7)
BETAS = (0.25, 0.5, 1.0, 2.0)
MAX_TOKENS = 120


def words(text: str) -> list[str]:
    return text.lower().split()


def repeats(text: str) -> float:
    w = words(text)
    grams = list(zip(w, w[1:], w[2:]))
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def echo(text: str, prompt: str) -> float:
    w, p = words(text), set(words(prompt))
    return sum(x in p for x in w) / len(w) if w else 1.0


def measure(text: str, prompt: str, ended: bool) -> dict:
    return {"words": len(words(text)), "repeats": round(repeats(text), 3), "echo": round(echo(text, prompt), 3),
            "ended": ended}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    command, rev = command_line(__file__, argv), git_rev()

    from drift_cpp.score.attributes import builtin_attributes
    from drift_cpp.steer.session import Drift, Sampling
    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.preferences import load_pairs
    from drift_cpp.fit.profile import FitOptions, Profile
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    options = ModelOptions(threads=args.threads)
    scorer = Scorer(load_model(None, options), cache=ScoreCache(), max_response_tokens=0)  # as it was run
    pairs, attributes = load_pairs(DEMO_PAIRS), builtin_attributes().select(DEMO_ATTRIBUTES)
    sampling = Sampling(temperature=0, max_tokens=MAX_TOKENS)
    t0, rows = time.monotonic(), []
    plain = Drift(options=options)
    for prompt in DEMO_PROMPTS:
        g = plain.generate(prompt, sampling)
        rows.append({"config": "plain", "prompt": prompt, "text": g.text,
                     **measure(g.text, prompt, g.finish_reason != "length")})
    for method in METHODS:
        profile = Profile.fit(pairs, scorer, attributes, FitOptions(method=method))
        for top, beta in itertools.product(TOPS, BETAS):
            drift = Drift(profile=profile, beta=beta, top_attributes=top, options=options)
            weights = [[a.id, round(w, 3)] for a, w in profile.decoding_weights(top)]
            for prompt in DEMO_PROMPTS:
                g = drift.generate(prompt, sampling)
                rows.append({"config": f"{method} top={top} β={beta:g}", "method": method, "top": top, "beta": beta,
                             "weights": weights, "prompt": prompt, "text": g.text,
                             **measure(g.text, prompt, g.finish_reason != "length")})
            log(f"{method} top={top} beta={beta:g}: {[r['words'] for r in rows[-2:]]} words")
    results = {"command": command, "git_rev": rev, "seconds": time.monotonic() - t0, "rows": rows}
    write_results(args.out, results, markdown(results))
    return 0


def markdown(results: dict) -> str:
    out = ["# The demo's personalized answers over fit method, top-m and β", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- {len(DEMO_PROMPTS)} prompts, greedy, {MAX_TOKENS} tokens; embedded SmolLM2-135M as LLM and sLM; "
           f"{results['seconds']:.0f} s", "",
           "| config | prompt | words | repeats | echo | ended | answer (first 100 characters) |",
           "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        text = json.dumps(r["text"][:100], ensure_ascii=False).replace("|", "\\|")
        out.append(f"| {r['config']} | {r['prompt']} | {r['words']} | {r['repeats']:.2f} | {r['echo']:.2f} | "
                   f"{'yes' if r['ended'] else 'no'} | {text} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
