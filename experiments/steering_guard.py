#!/usr/bin/env python
"""Does personalization keep the answer? The plausibility guard and anti-repetition sampling (issue 19).

Steered answers can win a form judge and be worse in substance (an echo of the prompt, a loop, a
short wrong answer). This runs the four form-judge personas of generation_judges.py with the
content judges of content_judges.py beside them, over the guard's α (only tokens with
p_LLM ≥ α·max p_LLM may be sampled), llama.cpp's DRY sampler and β, chooses the defaults on
TRAINING prompts by the rule below, and then reports the held-out prompts once, untuned.

Protocol (every setting fixed here, before the run):
  * Profiles: those of generation_judges' `terms_long` size (its 20 training prompts, four plain
    answers each at 320 tokens, every two a pair, labelled by each persona's judge; the demo's 14
    attributes scored on each answer's first 64 tokens; the joint model, qp, sum, top 7). The
    training answers are read from that run's generations log when it is copied into --out.
  * Study prompts (training only): the first 4 of generation_judges' TRAIN_PROMPTS and the first
    6 of fact_prompts' FACT_TRAIN. Held-out: the 20 FACT_HELD_OUT prompts (the demo's two questions
    among them), run once at the end; every form judge reads them too. (Sized to one thread of a
    shared, loaded 2-core machine for about two hours; generation_judges' own held-out prompts have
    today's form numbers in docs/results/generation_terms_long.)
  * Decoding: temperature 1, top-p 0.9 (generation_judges' sampler), at most 48 tokens, one seed per
    prompt shared by plain and steered decoding (study: 7000 + index, held-out: 5000 + index for
    generation_judges' prompts and 5100 + index for the factual ones). Plain answers use the same
    sampler as the steered ones they are compared with (DRY included); the guard applies only where
    a profile steers.
  * Settings, one coordinate at a time: stage 1 sweeps α ∈ {0, 0.01, 0.03, 0.1, 0.3} at β = 0.5
    without DRY; stage 2 (--stage2) tries, at the α the rule picks in stage 1, DRY multiplier 0.8
    (DRY's other settings at llama.cpp's: base 1.75, allowed length 2, whole context) and β = 0.25.
    The rule then picks among all settings studied.
  * Measures per setting and persona: the form judge's win rate over plain; fact recall of the
    steered answers over the plain ones' (factual prompts); NLL per token under the plain LLM, steered
    over plain; loops and echoes (content_judges).
  * The rule (CHOICE_RULE): a setting is admissible when, over the four personas on the study
    prompts, no steered answer loops or echoes where the plain answer to the same prompt does not,
    pooled fact recall is ≥ 0.95× plain, and pooled NLL per token is ≤ 1.3× plain. Among admissible
    settings, the highest mean form win rate over the four personas; settings within 0.025 of it (one
    prompt's outcome in one persona) go to the smaller α, then no DRY, then β = 0.5. If none is
    admissible: the fewest degenerate answers, then the highest fact ratio.
  * Held-out: plain, the chosen setting (the profile and the negated profile) and today's setting
    (α = 0, no DRY, β = 0.5; the profile); content judges, and on the 20 factual prompts a model judge
    (--judge-model; the largest model at hand) asked in both orders which answer is more correct and
    helpful.

Outputs under --out: results.json, results.md (the exact command and git rev), generations.jsonl
(every generation, keyed by what determines it: a rerun resumes).

    cp docs/results/generation_terms_long/generations.jsonl docs/results/steering_guard/   # the training answers
    python experiments/steering_guard.py --threads 1 --out docs/results/steering_guard --stage2 --held-out --judge-model gemma
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Optional

import content_judges as cj
import generation_judges as gj
from drift_cpp.fit import choice
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from fact_prompts import FACT_HELD_OUT, FACT_PROMPTS, FACT_TRAIN
from run_info import command_line, git_rev, log, run

SETUP = gj.SIZES["terms_long"]
# Sized to what one thread on a shared, loaded 2-core machine decodes in the ~2 h this study had (Drift at
# top 7: ~3-5 tokens/s there): 10 study prompts, the 20 factual held-out prompts, answers cut at 48 tokens.
MAX_TOKENS = 48
STUDY_PROMPTS = gj.TRAIN_PROMPTS[:4] + FACT_TRAIN[:6]
HELD_OUT = FACT_HELD_OUT
STUDY_SEED, HELD_SEED, FACT_SEED_OFFSET = 7000, 5000, 100

ALPHAS = (0.0, 0.01, 0.03, 0.1, 0.3)
DRYS = (0.0, 0.8)
BETAS = (0.5, 0.25)
TODAY = (0.0, 0.0, 0.5)  # (α, DRY, β) before issue 19
FACTS_MIN, NLL_MAX, WIN_TIE = 0.95, 1.3, 0.025
CHOICE_RULE = ("admissible: over the four personas on the study prompts, no steered answer loops or echoes where "
               "the plain answer to the same prompt does not, pooled fact recall >= 0.95x plain and pooled NLL per "
               "token <= 1.3x plain; among those, the highest mean form win rate over the four personas, settings "
               "within 0.025 of it going to the smaller alpha, then no DRY, then beta 0.5; if none is admissible, "
               "the fewest degenerate answers, then the highest fact ratio")


def stage1() -> list[tuple[float, float, float]]:
    """The α sweep at β = 0.5 without DRY."""
    return [(a, DRYS[0], BETAS[0]) for a in ALPHAS]


def stage2(alpha: float) -> list[tuple[float, float, float]]:
    """At the α stage 1 chose: DRY on, and the other β (one coordinate at a time)."""
    return [(alpha, d, BETAS[0]) for d in DRYS[1:]] + [(alpha, DRYS[0], b) for b in BETAS[1:]]


def label(setting) -> str:
    a, d, b = setting
    return f"alpha={a:g} dry={d:g} beta={b:g}"


def seed_of(prompt: str, base: int) -> int:
    if prompt in gj.PROMPTS:
        return base + gj.PROMPTS.index(prompt)
    return base + FACT_SEED_OFFSET + FACT_PROMPTS.index(prompt)


def sampler(dry: float) -> dict:
    return {"dry_multiplier": dry} if dry else {}


def guarded(formula, alpha: float):
    """The formula with the guard at α (no trust region), or as it is where the code has no guard."""
    if hasattr(formula, "with_guard"):
        return formula.with_guard(alpha, 0.0)
    if alpha:
        raise DriftError("this drift_cpp has no plausibility guard (Formula.with_guard)")
    return formula


# ---------------------------------------------------------------------------- measures
def measure(persona: str, prompts, steered: list, plain: list, fluency) -> dict:
    win = gj.win_stats(persona, steered, plain)
    content = cj.content_summary(prompts, [a.text for a in steered], [a.text for a in plain], fluency)
    bad = [i for i, (s, p, q) in enumerate(zip(steered, plain, prompts))
           if cj.degenerate(s.text, q) and not cj.degenerate(p.text, q)]
    return {"win_rate": win["win_rate"], "se": win["se"], "wins": win["wins"], "ties": win["ties"],
            "losses": win["losses"], "ended": sum(a.ended for a in steered), **content,
            "degenerate_new": len(bad), "degenerate_new_prompts": [prompts[i] for i in bad]}


def pooled(per_persona: dict) -> dict:
    """Over the personas: mean win rate, fact recall (sums) and NLL (means) steered against plain."""
    rs = list(per_persona.values())
    facts = [r["facts"] for r in rs if "facts" in r]
    out = {"mean_win_rate": sum(r["win_rate"] for r in rs) / len(rs),
           "min_win_rate": min(r["win_rate"] for r in rs),
           "degenerate_new": sum(r["degenerate_new"] for r in rs),
           "loops": sum(r["loops_steered"] for r in rs), "echoes": sum(r["echoes_steered"] for r in rs),
           "loops_plain": sum(r["loops_plain"] for r in rs), "echoes_plain": sum(r["echoes_plain"] for r in rs)}
    if facts:
        s, p = sum(f["recall"] * f["n"] for f in facts), sum(f["recall_plain"] * f["n"] for f in facts)
        out["facts_ratio"] = s / p if p else None
        out["facts_recall"] = s / sum(f["n"] for f in facts)
        out["facts_recall_plain"] = p / sum(f["n"] for f in facts)
    nll = [r["nll"] for r in rs if r.get("nll") is not None]
    nllp = [r["nll_plain"] for r in rs if r.get("nll_plain") is not None]
    out["nll"] = sum(nll) / len(nll) if nll else None
    out["nll_plain"] = sum(nllp) / len(nllp) if nllp else None
    out["nll_ratio"] = out["nll"] / out["nll_plain"] if nll and nllp else None
    return out


def model_judge(judge, steered: list, plain: list) -> dict:
    """The model judge on the factual held-out prompts, where its verdict can be read beside the facts judge."""
    return cj.judge_summary([judge.compare(q, s.text, p.text) for q, s, p in zip(HELD_OUT, steered, plain)
                             if q in FACT_HELD_OUT])


def admissible(p: dict) -> bool:
    return (p["degenerate_new"] == 0 and (p.get("facts_ratio") or 0.0) >= FACTS_MIN
            and p["nll_ratio"] is not None and p["nll_ratio"] <= NLL_MAX)


def choose(study: dict) -> tuple[Optional[tuple], str]:
    """The rule, over the settings the study holds: (setting, why)."""
    settings = [tuple(s["setting"]) for s in study.values()]
    if not settings:
        return None, "no setting studied"
    pools = {tuple(s["setting"]): s["pooled"] for s in study.values()}
    ok = [s for s in settings if admissible(pools[s])]
    if ok:
        best = max(pools[s]["mean_win_rate"] for s in ok)
        near = [s for s in ok if pools[s]["mean_win_rate"] >= best - WIN_TIE]
        pick = min(near, key=lambda s: (s[0], s[1], s[2] != 0.5))
        return pick, (f"{len(ok)} of {len(settings)} settings admissible; best mean win rate {best:.3f}; "
                      f"{len(near)} within {WIN_TIE}; the smallest alpha, then no DRY, then beta 0.5 among them")
    pick = min(settings, key=lambda s: (pools[s]["degenerate_new"], -(pools[s].get("facts_ratio") or 0.0)))
    return pick, f"none of {len(settings)} settings admissible: the fewest degenerate answers, then the best facts"


# ---------------------------------------------------------------------------- report
def _f(x, spec=".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(results: dict) -> str:
    out = ["# Does personalization keep the answer? The guard, DRY and β on training prompts, then held-out once",
           "", f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- model: {results['model']['name']} (sha256 {results['model']['sha256'][:16]}...), LLM and sLM alike",
           f"- profiles: generation_judges `terms_long` ({results['config']['n_train']} training prompts x 4 answers, "
           f"{len(results['config']['attributes'])} attributes, joint model, top {gj.TOP}); decoding at most "
           f"{MAX_TOKENS} tokens, temperature {gj.TEMPERATURE}, top-p {gj.TOP_P}",
           f"- study prompts (training): {len(STUDY_PROMPTS)} (4 generation_judges + 6 factual); held-out: "
           f"{len(HELD_OUT)} factual prompts (every judge reads them)",
           f"- rule: {CHOICE_RULE}", ""]
    for name, r in results["personas"].items():
        out.append(f"- {name}: {r['labels']['n_pairs']} pairs; " + "; ".join(r["profile"]["explain"]))
    out += ["", "## Study (training prompts)", "",
            "| α | DRY | β | mean win | min win | facts steered / plain | NLL ratio | loops (plain) | echoes (plain) "
            "| new degenerate | admissible | short | exclaim | lists | plain_words |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["study"].values():
        p, (a, d, b) = s["pooled"], s["setting"]
        per = " | ".join(_f(s["personas"][q]["win_rate"]) if q in s["personas"] else "–" for q in gj.PERSONAS)
        out.append(f"| {a:g} | {d:g} | {b:g} | {_f(p['mean_win_rate'])} | {_f(p['min_win_rate'])} | "
                   f"{_f(p.get('facts_recall'))} / {_f(p.get('facts_recall_plain'))} = {_f(p.get('facts_ratio'))} | "
                   f"{_f(p['nll_ratio'])} | {p['loops']} ({p['loops_plain']}) | {p['echoes']} ({p['echoes_plain']}) | "
                   f"{p['degenerate_new']} | {'yes' if admissible(p) else 'no'} | {per} |")
    ch = results.get("choice")
    if ch:
        out += ["", f"**Chosen**: α = {ch['setting'][0]:g}, DRY = {ch['setting'][1]:g}, β = {ch['setting'][2]:g} "
                f"({ch['why']})."]
    held = results.get("held_out")
    if held:
        out += ["", "## Held-out (once, untuned)", "",
                "| setting | persona | win rate | wins / ties / losses | facts steered / plain | NLL steered / plain "
                "| loops (plain) | echoes (plain) | model judge: steered wins (debiased) | judge picks first |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for name, h in held.items():
            for persona, r in h["personas"].items():
                f = r.get("facts", {})
                mj = r.get("model_judge", {})
                out.append(f"| {name} | {persona} | {_f(r['win_rate'])} ± {_f(r['se'])} | {r['wins']} / {r['ties']} / "
                           f"{r['losses']} | {_f(f.get('recall'))} / {_f(f.get('recall_plain'))} | "
                           f"{_f(r.get('nll'))} / {_f(r.get('nll_plain'))} | {r['loops_steered']} ({r['loops_plain']}) | "
                           f"{r['echoes_steered']} ({r['echoes_plain']}) | {_f(mj.get('win_rate'))} ({_f(mj.get('debiased_win_rate'))}) | "
                           f"{_f(mj.get('first_position_rate'))} |")
            p = h["pooled"]
            out.append(f"| **{name}** | all | **{_f(p['mean_win_rate'])}** | | {_f(p.get('facts_recall'))} / "
                       f"{_f(p.get('facts_recall_plain'))} = **{_f(p.get('facts_ratio'))}** | ratio **{_f(p['nll_ratio'])}** "
                       f"| {p['loops']} ({p['loops_plain']}) | {p['echoes']} ({p['echoes_plain']}) | | |")
        if results.get("examples"):
            out += ["", "Examples (held-out):", ""]
            for e in results["examples"]:
                out.append(f"- *{e['prompt']}* — {e['setting']} {e['persona']}: {json.dumps(e['text'][:160], ensure_ascii=False)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stage2", action="store_true", help="after the α sweep, DRY and the other β at its choice")
    ap.add_argument("--held-out", action="store_true", help="then run the held-out prompts once (today and the choice)")
    ap.add_argument("--today-only", action="store_true",
                    help="only the held-out answers at today's setting (to run beside the study), into held_today.json")
    ap.add_argument("--only", default=None,
                    help="only these study settings, 'alpha,dry,beta;...' (to run beside the full run, which reads them)")
    ap.add_argument("--negated-only", action="store_true",
                    help="only the negated profile's held-out answers at the chosen setting (to run beside --held-out)")
    ap.add_argument("--no-judge", action="store_true", help="leave the model judge to a later --judge-only run")
    ap.add_argument("--judge-only", action="store_true", help="only the model judge, on the stored held-out answers")
    ap.add_argument("--judge-model", default=None, help="the model judge (default: the LLM)")
    args = ap.parse_args(argv)
    command, rev = command_line(__file__, argv), git_rev()

    from drift_cpp.steer.session import Drift
    from drift_cpp.steer.build import drift_formula
    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.fit.profile import FitOptions, Profile
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    options = ModelOptions(threads=args.threads)
    model = load_model(None, options)
    fp = model.identity["sha256"]
    glog = gj.GenerationLog(args.out / "generations.jsonl")
    attributes = builtin_attributes().select(include=SETUP["attributes"])

    # 1. the training answers of terms_long (from its log) and a profile per persona
    plain = Drift(options=options)
    train, answers = gj.training_answers("terms_long", plain, glog, fp)
    scorer = Scorer(model, cache=ScoreCache(), max_response_tokens=SETUP["score_tokens"])
    fit_options = FitOptions(top=gj.TOP, normalize="sum", method="qp", family=choice.AUTO)
    profiles, personas = {}, {}
    for persona in gj.PERSONAS:
        pairs, labels = gj.label_all(persona, train, answers)
        profile = Profile.fit(pairs, scorer, attributes, fit_options, screen=None)
        profiles[persona] = profile
        personas[persona] = {"labels": labels, "profile": {
            "decoding": [{"id": a.id, "p": w} for a, w in profile.decoding_weights()] if profile.uses_attributes() else [],
            "family": choice.family_name(profile.choice.family), "length_weight": profile.length_weight(),
            "explain": choice.explain(profile.choice, [(a.name, w) for a, w in profile.decoding_weights()],
                                      profile.word_weights())}}
        log(f"{persona}: {labels['n_pairs']} pairs, {personas[persona]['profile']['family']}")
    t_fit = time.monotonic()

    fluency = cj.Fluency(model)
    results_path = args.out / "results.json"
    old = json.loads(results_path.read_text("utf-8")) if results_path.exists() else {}
    results = {"command": command, "git_rev": rev, "model": model.identity,
               "config": {"n_train": len(train), "attributes": list(attributes.ids), "max_tokens": MAX_TOKENS,
                          "temperature": gj.TEMPERATURE, "top_p": gj.TOP_P, "alphas": ALPHAS, "drys": DRYS,
                          "betas": BETAS, "study_prompts": list(STUDY_PROMPTS), "held_out": list(HELD_OUT),
                          "rule": CHOICE_RULE, "fit": dataclasses.asdict(fit_options)},
               "personas": personas, "study": {}, "timing": {"fit_s": t_fit - t0}}
    if "held_out" in old:
        results["held_out"] = old["held_out"]

    def make_judge():
        judge = cj.ModelJudge(load_model(args.judge_model, options) if args.judge_model else model, cache=ScoreCache())
        results["judge_model"] = judge.model.identity["name"]
        return judge

    if args.judge_only:  # the model judge on the held-out answers a run without it stored
        judge = make_judge()
        results = old | {"judge_model": results["judge_model"], "judge_command": command, "judge_git_rev": rev}
        for name, h in results["held_out"].items():
            ref = [gj.Answer(t) for t in h["plain_texts"]]
            for persona, r in h["personas"].items():
                r["model_judge"] = model_judge(judge, [gj.Answer(t) for t in r["texts"]], ref)
                log(f"JUDGE {name} {persona}: {r['model_judge']['win_rate']:.2f}, debiased "
                    f"{r['model_judge']['debiased_win_rate']:.2f}, first {r['model_judge']['first_position_rate']:.2f}")
                atomic_write_text(results_path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(results_path.with_suffix(".md"), markdown(results))
        return 0

    def write():
        atomic_write_text(results_path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(results_path.with_suffix(".md"), markdown(results))

    def plain_answers(prompts, base, dry, tag):
        return gj.run_prompts(f"plain {tag} dry={dry:g}", plain, prompts, [seed_of(q, base) for q in prompts],
                              MAX_TOKENS, glog, fp, sampler(dry))[0]

    def reread():  # another run of this script beside this one (--only, --today-only, --negated-only) may have logged answers
        nonlocal glog
        glog.close()
        glog = gj.GenerationLog(args.out / "generations.jsonl")

    def steered(persona, sign, setting, prompts, base, tag):
        reread()
        a, d, b = setting
        formula = guarded(drift_formula(None, [(profiles[persona], sign)], b, gj.TOP, ()), a)
        drift = Drift(formula=formula, options=options)
        got = gj.run_prompts(f"{persona}{' negated' if sign < 0 else ''} {label(setting)} {tag}", drift, prompts,
                             [seed_of(q, base) for q in prompts], MAX_TOKENS, glog, fp, sampler(d))[0]
        del drift
        return got

    # 2. the study, on training prompts only: stage 1 (the α sweep), then stage 2 at stage 1's choice
    t_study = time.monotonic()
    plain_study = {}

    def study(setting):
        d = setting[1]
        if d not in plain_study:
            plain_study[d] = plain_answers(STUDY_PROMPTS, STUDY_SEED, d, "study")
        per = {}
        for persona in gj.PERSONAS:
            got = steered(persona, 1.0, setting, STUDY_PROMPTS, STUDY_SEED, "study")
            per[persona] = measure(persona, STUDY_PROMPTS, got, plain_study[d], fluency)
            per[persona]["texts"] = [a.text for a in got]
        results["study"][label(setting)] = {"setting": list(setting), "personas": per, "pooled": pooled(per)}
        p = results["study"][label(setting)]["pooled"]
        log(f"STUDY {label(setting)}: mean win {p['mean_win_rate']:.2f}, facts {_f(p.get('facts_ratio'))}, "
            f"NLL {_f(p['nll_ratio'])}, loops {p['loops']}, echoes {p['echoes']}, new degenerate {p['degenerate_new']}")
        write()

    if args.today_only or args.negated_only or args.only:  # beside a full run, logging answers early
        results_path = args.out / ("held_today.json" if args.today_only else "held_negated.json" if args.negated_only
                                   else "study_only.json")
        stage = [tuple(float(x) for x in one.split(",")) for one in args.only.split(";")] if args.only else []
    else:
        stage = stage1()
    for setting in stage:
        study(setting)
    if args.only:
        return 0
    if not (args.today_only or args.negated_only):
        first, why1 = choose(results["study"])
        results["stage1_choice"] = {"setting": list(first), "why": why1}
        log(f"STAGE 1 {label(first)}: {why1}")
        if args.stage2:
            for setting in stage2(first[0]):
                study(setting)
        pick, why = choose(results["study"])
        results["choice"] = {"setting": list(pick), "why": why}
        log(f"CHOSEN {label(pick)}: {why}")
        results["timing"]["study_s"] = time.monotonic() - t_study
        write()

    # 3. held-out, once: the chosen setting (profile and negated profile) and today's (profile)
    if args.negated_only:  # beside a --held-out run: the negated profile's held-out answers at the chosen setting
        pick = tuple(old["choice"]["setting"])
        for persona in reversed(gj.PERSONAS):  # the other run starts from the first persona
            steered(persona, -1.0, pick, HELD_OUT, HELD_SEED, "held-out")
        glog.close()
        return 0
    if args.held_out or args.today_only:
        reread()
        t_held = time.monotonic()
        judge = None if args.no_judge else make_judge()
        held = {}
        runs = (("today", TODAY),) if args.today_only else (("chosen", pick), ("today", TODAY))
        for name, setting in runs:
            d = setting[1]
            reread()
            ref = plain_answers(HELD_OUT, HELD_SEED, d, "held-out")
            per = {}
            for persona in gj.PERSONAS:
                got = steered(persona, 1.0, setting, HELD_OUT, HELD_SEED, "held-out")
                per[persona] = measure(persona, HELD_OUT, got, ref, fluency)
                per[persona]["texts"] = [a.text for a in got]
                if not args.no_judge:
                    per[persona]["model_judge"] = model_judge(judge, got, ref)
                log(f"HELD {name} {persona}: win {per[persona]['win_rate']:.2f}")
            held[name] = {"setting": list(setting), "personas": per, "pooled": pooled(per),
                          "plain_texts": [a.text for a in ref]}
            results["held_out"] = held
            write()
        if not args.today_only:  # the negated profile at the new setting (today's: generation_terms_long)
            reread()
            ref = plain_answers(HELD_OUT, HELD_SEED, pick[1], "held-out")
            for persona in gj.PERSONAS:
                neg = steered(persona, -1.0, pick, HELD_OUT, HELD_SEED, "held-out")
                r = held["chosen"]["personas"][persona]
                r["negated"] = {k: v for k, v in gj.win_stats(persona, neg, ref).items()
                                if k in ("win_rate", "se", "wins", "ties", "losses")}
                r["negated"]["degenerate"] = sum(cj.degenerate(a.text, q) for a, q in zip(neg, HELD_OUT))
                r["negated"]["texts"] = [a.text for a in neg]
                log(f"HELD negated {persona}: win {r['negated']['win_rate']:.2f}")
                write()
        results["timing"]["held_out_s"] = time.monotonic() - t_held
        results["examples"] = [
            {"prompt": q, "setting": name, "persona": persona, "text": held[name]["personas"][persona]["texts"][i]}
            for q in ("How do I boil an egg?", "Why is the sky blue?") for i in [HELD_OUT.index(q)]
            for name in held for persona in gj.PERSONAS]
    glog.close()
    results["timing"]["total_s"] = time.monotonic() - t0
    write()
    return 0


if __name__ == "__main__":
    run(main)
