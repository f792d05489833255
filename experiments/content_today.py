#!/usr/bin/env python
"""The content judges on the answers already stored under docs/results (issue 19, "today's numbers").

Reads the generations that earlier runs wrote into their results.json (generation_judges' sizes,
before the plausibility guard existed) and the demo's settings, and reports, steered against plain
on the same held-out prompts: loops, echoes, NLL per token under the plain embedded LLM (SmolLM2
runs only), fact recall where a prompt has required words (fact_prompts.py: the egg everywhere, and
both demo questions in demo_settings), and the model judge in both orders (SmolLM2 runs only).
Nothing is generated.

    python experiments/content_today.py --threads 1 --out docs/results/steering_guard
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import content_judges as cj
from drift_cpp.fileio import atomic_write_text
from run_info import REPO, command_line, git_rev, log, run

RUNS = ("generation_judges", "generation_terms", "generation_terms_length", "generation_terms_long",
        "generation_terms_long_length", "generation_terms_long_lexical", "generation_judges_pair",
        "generation_judges_pair_short_exclaim")
JUDGED = ("generation_terms_long",)  # the model judge, on the joint model's runs at 320 tokens (cost: one run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-model", action="store_true", help="loops, echoes and facts only: no NLL, no model judge")
    args = ap.parse_args(argv)
    command, rev = command_line(__file__, argv), git_rev()

    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.score.cache import ScoreCache

    model = load_model(None, ModelOptions(threads=args.threads))
    fluency, judge = (None, None) if args.no_model else (cj.Fluency(model), cj.ModelJudge(model, cache=ScoreCache()))
    rows = []
    for name in RUNS:
        r = json.loads((REPO / "docs" / "results" / name / "results.json").read_text("utf-8"))
        prompts = r["prompts"]["held_out"]
        llm = r.get("llm", r["model"])
        smol = llm.get("sha256") == model.identity["sha256"] or llm["name"] == model.identity["name"]
        plain = [a["text"] for a in r["generations"]["plain"]]
        for key, answers in r["generations"].items():
            if key == "plain":
                continue
            texts = [a["text"] for a in answers]
            s = cj.content_summary(prompts, texts, plain, fluency if smol else None)
            s["texts_flagged"] = [[q, t[:200], cj.loop_reason(t), cj.echo_reason(t, q)] for q, t in zip(prompts, texts)
                                  if cj.degenerate(t, q)]
            s.pop("nll_per_answer", None)
            row = {"run": name, "config": key, **s}
            if judge and smol and name in JUDGED and not key.endswith("icl"):
                row["model_judge"] = cj.judge_summary([judge.compare(q, t, p) for q, t, p in zip(prompts, texts, plain)])
            rows.append(row)
            log(f"{name} {key}: loops {s['loops_steered']} ({s['loops_plain']}), echoes {s['echoes_steered']} "
                f"({s['echoes_plain']}), NLL ratio {cj._fmt(s.get('nll_ratio'))}")
    demo = json.loads((REPO / "docs" / "results" / "demo_settings" / "results.json").read_text("utf-8"))
    plain_demo = {x["prompt"]: x["text"] for x in demo["rows"] if x["config"] == "plain"}
    demo_rows = []
    for x in demo["rows"]:
        q, t = x["prompt"], x["text"]
        demo_rows.append({"config": x["config"], "prompt": q, "facts": cj.fact_recall(t, q),
                          "facts_plain": cj.fact_recall(plain_demo[q], q), "loop": cj.loop_reason(t),
                          "echo": cj.echo_reason(t, q), "nll": fluency.nll_per_token(q, t) if fluency else None,
                          "nll_plain": fluency.nll_per_token(q, plain_demo[q]) if fluency else None,
                          "text": t[:120]})
    results = {"command": command, "git_rev": rev, "model": model.identity, "runs": rows, "demo_settings": demo_rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "today.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(args.out / "today.md", markdown(results))
    return 0


def markdown(results: dict) -> str:
    f = cj._fmt
    out = ["# The content judges on the answers stored before the guard", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- NLL and the model judge: {results['model']['name']} (the plain embedded LLM; SmolLM2 runs only)", "",
           "Steered against plain on each run's held-out prompts. Loops / echoes: steered (plain). Facts: the egg "
           "prompt only (the one factual prompt among generation_judges' held-out ones). Model judge: the share of "
           "prompts where the judge prefers the steered answer in both orders (0.5 where the orders disagree), and "
           "how often it picks the answer shown first.", "",
           "| run | config | n | loops | echoes | empty | egg facts steered / plain | NLL steered / plain (ratio) "
           "| model judge: steered wins | picks first |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        fa, mj = r.get("facts", {}), r.get("model_judge", {})
        out.append(f"| {r['run']} | {r['config']} | {r['n']} | {r['loops_steered']} ({r['loops_plain']}) | "
                   f"{r['echoes_steered']} ({r['echoes_plain']}) | {r['empty_steered']} | {f(fa.get('recall'))} / "
                   f"{f(fa.get('recall_plain'))} | {f(r.get('nll'))} / {f(r.get('nll_plain'))} ({f(r.get('nll_ratio'))}) "
                   f"| {f(mj.get('win_rate'))} | {f(mj.get('first_position_rate'))} |")
    out += ["", "## The demo's settings (docs/results/demo_settings: greedy, 120 tokens)", "",
            "| config | prompt | facts (plain) | loop | echo | NLL (plain) | answer |", "|---|---|---|---|---|---|---|"]
    for r in results["demo_settings"]:
        out.append(f"| {r['config']} | {r['prompt']} | {r['facts']:.2f} ({r['facts_plain']:.2f}) | {r['loop'] or ''} | "
                   f"{r['echo'] or ''} | {f(r['nll'])} ({f(r['nll_plain'])}) | "
                   f"{json.dumps(r['text'][:70], ensure_ascii=False).replace('|', '/')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
