#!/usr/bin/env python
"""Do the demo's personalized answers stay coherent when its profile moves a little? (issue 19, item 5)

The demo once printed `Boil an egg: "Boil an egg"` on one machine and a coherent answer on another:
the third of its three steering weights was a near tie (formal -0.421, internet_slang +0.420), and a
floating-point difference flipped it. This fits the demo's profile as `drift-cpp demo` does (its 12
pairs, 14 attributes, the paper's attribute model, top 3, whole responses scored) and decodes its two
prompts (greedy, 120 tokens, β = 0.5) under small perturbations of that profile:

  * each of the top-3 weights ×1.05 and ×0.95, one at a time;
  * top-m 2 and 4;
  * the order of ranks 3 and 4 by |p| swapped (the attribute at the edge of the top 3 replaced by
    the next one: their magnitudes exchanged, each keeping its sign), and so for ranks 2 and 3;

each at the guard's α = 0 (before issue 19) and at each --alphas value. Every answer is checked by
content_judges: the facts kept (fact_prompts: water/heat/pot... for the egg, scattering and light for
the sky), loops, echoes, and whether it ended before the limit. A setting holds when every answer keeps
at least one required fact group, and none loops, echoes or is empty.

    python experiments/demo_robustness.py --threads 1 --out docs/results/steering_guard/demo_robustness
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import content_judges as cj
from drift_cpp.demo import DEMO_ATTRIBUTES, DEMO_BETA, DEMO_PAIRS, DEMO_PROMPTS, DEMO_TOP
from run_info import command_line, git_rev, log, run, write_results

TOP, BETA, MAX_TOKENS = DEMO_TOP, DEMO_BETA, 120  # the demo's


def perturbations(profile) -> list[tuple[str, object, int]]:
    """(name, profile, top): the demo's profile and its small perturbations."""
    import numpy as np

    order = list(np.argsort(-np.abs(profile.p), kind="stable"))
    ids = profile.attributes.ids

    def with_p(p):
        q = copy.copy(profile)
        q.p = p
        return q

    out = [("as fitted", profile, TOP)]
    for i in order[:TOP]:
        for f in (1.05, 0.95):
            p = profile.p.copy()
            p[i] *= f
            out.append((f"{ids[i]} x{f:g}", with_p(p), TOP))
    out += [("top 2", profile, TOP - 1), ("top 4", profile, TOP + 1)]
    for a, b in ((2, 3), (1, 2)):  # 0-based ranks: 3<->4, 2<->3
        i, j = order[a], order[b]
        p = profile.p.copy()
        p[i], p[j] = np.sign(p[i]) * abs(profile.p[j]), np.sign(p[j]) * abs(profile.p[i])
        out.append((f"ranks {a + 1}<->{b + 1} swapped ({ids[i]}, {ids[j]})", with_p(p), TOP))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-zero", action="store_true", help="leave out alpha = 0 (another run has it)")
    ap.add_argument("--dry", type=float, default=0.0, help="DRY multiplier of the sampler (0: off, the demo's)")
    ap.add_argument("--alphas", default="default",
                    help="comma-separated guard alphas beside 0; 'default' is drift_cpp.params.DEFAULT_PLAUSIBILITY")
    args = ap.parse_args(argv)
    command, rev = command_line(__file__, argv), git_rev()

    from drift_cpp import params
    from drift_cpp.score.attributes import builtin_attributes
    from drift_cpp.steer.session import Drift, Sampling
    from drift_cpp.steer.build import drift_formula
    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.preferences import load_pairs
    from drift_cpp.fit.profile import FitOptions, Profile
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    alphas = ([] if args.skip_zero else [0.0]) + [getattr(params, "DEFAULT_PLAUSIBILITY", 0.0) if a == "default" else float(a)
                      for a in args.alphas.split(",") if a]
    alphas = list(dict.fromkeys(alphas))
    options = ModelOptions(threads=args.threads)
    scorer = Scorer(load_model(None, options), cache=ScoreCache(), max_response_tokens=0)
    profile = Profile.fit(load_pairs(DEMO_PAIRS), scorer, builtin_attributes().select(DEMO_ATTRIBUTES),
                          FitOptions(top=TOP, family="attributes"), screen=None)
    sampling = Sampling(temperature=0, max_tokens=MAX_TOKENS, **({"dry_multiplier": args.dry} if args.dry else {}))
    t0 = time.monotonic()
    plain = Drift(options=options)  # with the same sampler
    plain_texts = {q: plain.generate(q, sampling).text for q in DEMO_PROMPTS}
    rows = []
    for name, prof, top in perturbations(profile):
        weights = [[a.id, round(w, 4)] for a, w in prof.decoding_weights(top)]
        for alpha in alphas:
            formula = drift_formula(None, [(prof, 1.0)], BETA, top, ())
            formula = formula.with_guard(alpha, 0.0) if hasattr(formula, "with_guard") else formula
            drift = Drift(formula=formula, options=options)
            for q in DEMO_PROMPTS:
                g = drift.generate(q, sampling)
                t = g.text
                rows.append({"perturbation": name, "top": top, "alpha": alpha, "weights": weights, "prompt": q,
                             "text": t, "ended": g.finish_reason != "length", "words": len(t.split()),
                             "facts": cj.fact_recall(t, q), "facts_plain": cj.fact_recall(plain_texts[q], q),
                             "loop": cj.loop_reason(t), "echo": cj.echo_reason(t, q), "empty": cj.empty(t)})
            del drift
            last = rows[-len(DEMO_PROMPTS):]
            log(f"{name} alpha={alpha:g}: " + "; ".join(f"{r['words']} words, facts {r['facts']:.2f}"
                                                        f"{', LOOP' if r['loop'] else ''}{', ECHO' if r['echo'] else ''}"
                                                        for r in last))
    for r in rows:
        r["holds"] = r["facts"] > 0 and not (r["loop"] or r["echo"] or r["empty"])
    summary = {f"{a:g}": {"answers": sum(r["alpha"] == a for r in rows),
                          "hold": sum(r["holds"] for r in rows if r["alpha"] == a),
                          "loops": sum(bool(r["loop"]) for r in rows if r["alpha"] == a),
                          "echoes": sum(bool(r["echo"]) for r in rows if r["alpha"] == a),
                          "no_fact": sum(r["facts"] == 0 for r in rows if r["alpha"] == a)} for a in alphas}
    results = {"command": command, "git_rev": rev, "seconds": time.monotonic() - t0, "dry_multiplier": args.dry,
               "profile": [[a.id, w] for a, w in profile.decoding_weights(TOP + 1)], "plain": plain_texts,
               "summary": summary, "rows": rows}
    write_results(args.out, results, markdown(results))
    for a, s in summary.items():
        print(f"alpha={a}: {s['hold']} / {s['answers']} answers hold; loops {s['loops']}, echoes {s['echoes']}, "
              f"no fact {s['no_fact']}")
    return 0


def markdown(results: dict) -> str:
    out = ["# The demo's personalized answers under small perturbations of its profile", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- the demo's data and settings (12 pairs, 14 attributes, top {TOP}, β = {BETA}, greedy, {MAX_TOKENS} "
           f"tokens), DRY multiplier {results.get('dry_multiplier', 0.0):g} (plain and steered alike); "
           f"{results['seconds']:.0f} s",
           "- the fitted profile's top 4 by |p|: " + ", ".join(f"{a} {w:+.3f}" for a, w in results["profile"]),
           "- an answer holds when it keeps at least one required fact group (fact_prompts.py) and does not loop, "
           "echo or come out empty (content_judges.py)", "",
           "| α | answers that hold | loops | echoes | no fact kept |", "|---|---|---|---|---|"]
    for a, s in results["summary"].items():
        out.append(f"| {a} | {s['hold']} / {s['answers']} | {s['loops']} | {s['echoes']} | {s['no_fact']} |")
    out += ["", "Plain (greedy): " + "; ".join(f"*{q}* {json.dumps(t[:100], ensure_ascii=False)}"
                                              for q, t in results["plain"].items()), "",
            "| perturbation | α | prompt | words | ended | facts (plain) | loop | echo | holds | answer |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        text = json.dumps(r["text"][:90], ensure_ascii=False).replace("|", "\\|")
        out.append(f"| {r['perturbation']} | {r['alpha']:g} | {r['prompt']} | {r['words']} | {'yes' if r['ended'] else 'no'} "
                   f"| {r['facts']:.2f} ({r['facts_plain']:.2f}) | {'yes' if r['loop'] else ''} | "
                   f"{'yes' if r['echo'] else ''} | {'yes' if r['holds'] else '**no**'} | {text} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
