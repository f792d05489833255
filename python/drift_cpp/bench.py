"""Benchmarks, measured side by side in one run (absolute times on shared machines are noise).

Scorer: tokens/s of the sLM against raw llama.cpp prefill of the same items, and tokens saved by
prefix sharing. Decoding, on an LLM and an sLM (the embedded model for both by default): the plain
LLM step and Drift at m = 1, 3, 7, each against its raw lower bound (the bare llama_decode calls);
the naive way (m + 2 llama-cpp-python Llama objects fused with numpy); KV memory at each m.
Grammar: decoding held to a JSON schema's grammar against free decoding, plain and Drift at m = 3.
Configurations are interleaved within each repetition, ratios are taken within a repetition, and the
report gives their median and min-max over repetitions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

import click
import numpy as np

from .errors import DriftError
from .models import PRESETS, ModelOptions
from .params import EngineOptions

QUESTIONS = ["Tell me about the ocean.", "How do plants grow?", "What makes a good friend?",
             "Explain how a bicycle works.", "Why do we sleep?", "What is a black hole?"]
SYSTEMS = ["You are an AI assistant.", "You are a humorous AI assistant.", "You are an analytic AI assistant."]
M_VALUES = (1, 3, 7)
NAIVE_M = 7
TARGET_RATIO = 1.10  # a Drift step may cost at most this much over its raw decode calls
# Free-text fields, so that a constrained answer runs about as long as a free one.
GRAMMAR_SCHEMA = {"type": "object", "required": ["topic", "summary"],
                  "properties": {"topic": {"type": "string"}, "summary": {"type": "string"}}}
GRAMMAR_M = 3


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def check_out_dir(out: Path) -> None:
    """Fail before minutes of measuring, not after, when the reports cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise DriftError(f"--out {out}: not a writable directory ({e.strerror or e})") from None


def report_name(llm: Optional[str], slm: Optional[str], quick: bool, grammar_only: bool = False) -> str:
    """bench(-quick) for the embedded model; bench-<llm>-<slm>(-quick) for another pair; bench-grammar...
    for the grammar alone."""
    names = [n if n in PRESETS else Path(n).stem for n in (llm, slm) if n]
    name = "-".join(["bench"] + (["grammar"] if grammar_only else []) + list(dict.fromkeys(names)))
    return name + ("-quick" if quick else "")


def bench_scorer(model, quick: bool) -> dict:
    """Our scorer vs llama-cpp-python's Llama.eval prefill of each prompt + response."""
    from .runtime import reference_llama
    from .score.scorer import ScoreRequest, Scorer

    n_q = 2 if quick else 6
    responses = [
        "The answer depends on several factors, which I will explain step by step in plain words. " * (k + 1)
        for k in range(3)
    ]
    requests = [ScoreRequest(s, (("user", q),), r) for s in SYSTEMS for q in QUESTIONS[:n_q] for r in responses]
    scorer = Scorer(model, max_response_tokens=0)
    work = [scorer.tokens(r, model.render(scorer._messages(r))) for r in requests]

    start = time.perf_counter()
    scorer.core.score(work, False)
    ours = time.perf_counter() - start
    stats = scorer.core.stats

    engine = EngineOptions()
    llm = reference_llama(model.path, n_ctx=engine.n_ctx, n_batch=engine.n_batch, n_threads=model.options.n_threads)
    start = time.perf_counter()
    for prompt, response in work:
        llm.reset()
        llm.eval(prompt + response[:-1])
    raw = time.perf_counter() - start

    ours_tps = stats["evaluated_tokens"] / ours
    raw_tps = stats["naive_tokens"] / raw
    return {
        "items": len(work),
        "evaluated_tokens": stats["evaluated_tokens"],
        "naive_tokens": stats["naive_tokens"],
        "scorer_seconds": ours,
        "raw_prefill_seconds": raw,
        "scorer_evaluated_tokens_per_s": ours_tps,
        "raw_prefill_tokens_per_s": raw_tps,
        "throughput_ratio": ours_tps / raw_tps,
        "wall_speedup": raw / ours,
    }


def _profile_with(slm, m: int):
    """Random unit weights on the first m attributes of the library."""
    from .score.attributes import builtin_attributes
    from .fit.profile import Profile

    w = np.random.default_rng(m).normal(size=m)
    w /= np.linalg.norm(w)
    return Profile.with_weights(slm, dict(zip(builtin_attributes().ids[:m], w)))


class _Naive:
    """What a user would write: one Llama per term of the formula (the LLM, then the sLM's base and
    each attribute), fused in numpy."""

    def __init__(self, drift, prompt: str):
        from .steer.formula import LLM
        from .runtime import reference_llama

        formula = drift.formula
        self.coefficients = [t.coefficient(formula.beta) for t in formula.terms]
        n_threads = drift.llm.options.n_threads
        self.llamas, self.prompts = [], []
        for term in formula.terms:
            model = drift.llm if term.model == LLM else drift.slm
            # logits_all: llama-cpp-python 0.3.36 keeps no scores without it
            self.llamas.append(reference_llama(model.path, n_ctx=1024, n_threads=n_threads, logits_all=True))
            text = model.render([{"role": "system", "content": term.system}, {"role": "user", "content": prompt}])
            self.prompts.append(model.tokenize_prompt(text))

    def step_seconds(self, n: int) -> float:
        for llm, tokens in zip(self.llamas, self.prompts):
            llm.reset()
            llm.eval(tokens)
        start = time.perf_counter()
        for _ in range(n):
            fused = sum(c * np.array(llm.scores[llm.n_tokens - 1]) for c, llm in zip(self.coefficients, self.llamas))
            token = int(np.argmax(fused))
            for llm in self.llamas:
                llm.eval([token])
        return (time.perf_counter() - start) / n


def _measure(drift, prompt: str, n: int) -> dict:
    """One configuration once: its raw decode calls, then the real Drift steps, from the same prompt."""
    from .steer.session import Sampling

    drift._sync(0, [{"role": "user", "content": prompt}])
    start = time.perf_counter()
    drift.engine.raw_steps(n)
    raw = (time.perf_counter() - start) / n
    out = drift.generate(prompt, Sampling(temperature=0, max_tokens=n))  # re-syncs: drops the raw steps' tokens
    return {"step_ms": 1e3 * out.seconds / max(len(out.tokens), 1), "raw_step_ms": 1e3 * raw,
            "tokens": len(out.tokens), "kv_bytes": drift.engine.kv_bytes}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_decoding(llm: Optional[str], slm: Optional[str], options: ModelOptions, quick: bool, reps: int,
                   n: int) -> dict:
    from .steer.session import Drift
    from .models import load_model

    m_values = M_VALUES[:2] if quick else M_VALUES
    naive_m = m_values[-1]
    prompt = QUESTIONS[0]
    slm_model = load_model(slm, options)
    drifts = {0: Drift(llm=llm, slm=slm, options=options)}
    for m in m_values:
        drifts[m] = Drift(llm=llm, slm=slm, profile=_profile_with(slm_model, m), options=options)
    naive = _Naive(drifts[naive_m], prompt)

    runs, loads = [], []
    for rep in range(reps):
        click.echo(f"  repetition {rep + 1} of {reps}...", err=True)
        loads.append(os.getloadavg()[0])
        run = {m: _measure(drift, prompt, n) for m, drift in drifts.items()}  # interleaved within the repetition
        run["naive_step_ms"] = 1e3 * naive.step_seconds(n)
        runs.append(run)

    rows = []
    for m in drifts:
        one = [r[m] for r in runs]
        row = {"m": m, "name": "plain LLM" if m == 0 else f"drift m={m}", "tokens": one[-1]["tokens"],
               "kv_bytes": one[-1]["kv_bytes"],
               "step_ms": _spread([x["step_ms"] for x in one]),
               "raw_step_ms": _spread([x["raw_step_ms"] for x in one]),
               "ratio_to_raw": _spread([x["step_ms"] / x["raw_step_ms"] for x in one])}
        if m:
            row["cost_over_plain"] = _spread([r[m]["step_ms"] / r[0]["step_ms"] for r in runs])
        rows.append(row)
    return {"tokens_per_config": n, "reps": reps, "rows": rows, "rss_mib": _rss_mib(),
            "load_at_each_rep": loads,
            "naive": {"m": naive_m, "step_ms": _spread([r["naive_step_ms"] for r in runs]),
                      "speedup_of_drift": _spread([r["naive_step_ms"] / r[naive_m]["step_ms"] for r in runs])}}


def bench_grammar(llm: Optional[str], slm: Optional[str], options: ModelOptions, reps: int, n: int) -> dict:
    """Greedy steps held to GRAMMAR_SCHEMA's grammar against free ones, on the plain LLM (the grammar sees
    every token) and on Drift at m = GRAMMAR_M under the default guard (it sees the guard's tokens, and
    every token where it rules out the LLM's top one)."""
    from .models import load_model
    from .params import Sampling
    from .steer.grammar import schema_grammar
    from .steer.session import Drift

    grammar = schema_grammar(GRAMMAR_SCHEMA)
    drifts = {"plain LLM": Drift(llm=llm, slm=slm, options=options),
              f"drift m={GRAMMAR_M}": Drift(llm=llm, slm=slm, options=options,
                                             profile=_profile_with(load_model(slm, options), GRAMMAR_M))}
    runs, loads = [], []
    for rep in range(reps):
        click.echo(f"  repetition {rep + 1} of {reps}...", err=True)
        loads.append(os.getloadavg()[0])
        run = {}
        for name, drift in drifts.items():  # interleaved within the repetition
            for held in ("", grammar):
                out = drift.generate(QUESTIONS[0], Sampling(temperature=0, max_tokens=n, grammar=held))
                run[name, bool(held)] = {"step_ms": 1e3 * out.seconds / max(len(out.tokens), 1),
                                         "tokens": len(out.tokens), "text": out.text}
        runs.append(run)
    rows = [{"name": name, "tokens_free": runs[-1][name, False]["tokens"],
             "tokens_grammar": runs[-1][name, True]["tokens"], "grammar_answer": runs[-1][name, True]["text"],
             "free_step_ms": _spread([r[name, False]["step_ms"] for r in runs]),
             "grammar_step_ms": _spread([r[name, True]["step_ms"] for r in runs]),
             "cost_of_grammar": _spread([r[name, True]["step_ms"] / r[name, False]["step_ms"] for r in runs])}
            for name in drifts]
    return {"schema": GRAMMAR_SCHEMA, "tokens_per_config": n, "reps": reps, "load_at_each_rep": loads, "rows": rows}


def _grammar_markdown(g: dict) -> list[str]:
    lines = ["## Grammar-constrained decoding", "",
             f"Greedy, {g['reps']} repetitions of up to {g['tokens_per_config']} tokens, held to the grammar of "
             f"`{json.dumps(g['schema'])}` (llama-cpp-python's converter) or free; median (min-max), each ratio "
             "within one repetition. Machine load at each repetition: "
             f"{', '.join(f'{x:.2f}' for x in g['load_at_each_rep'])}.", "",
             "| config | free step ms | grammar step ms | grammar / free | tokens free / grammar |",
             "|---|---|---|---|---|"]
    for r in g["rows"]:
        lines.append(f"| {r['name']} | {_fmt(r['free_step_ms'])} | {_fmt(r['grammar_step_ms'])} | "
                     f"{_fmt(r['cost_of_grammar'], 'x', 2)} | {r['tokens_free']} / {r['tokens_grammar']} |")
    return lines + [""] + [f"{r['name']} under the grammar: `{r['grammar_answer']}`" for r in g["rows"]]


def _fmt(s: dict, unit: str = "", digits: int = 1) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _markdown(report: dict) -> str:
    d = report.get("decoding") or report["grammar"]  # the grammar alone: bench --grammar-only
    lines = [f"# drift-cpp benchmark ({report['when']}, {report['machine']})", "",
             f"LLM: {report['llm']}; sLM: {report['slm']}; threads: {report['threads']}; "
             f"{d['reps']} repetitions of {d['tokens_per_config']} tokens per configuration.", "",
             f"Machine load (1-minute average) at the start: {report['load_before']:.2f}, at each repetition: "
             f"{', '.join(f'{x:.2f}' for x in d['load_at_each_rep'])}, at the end: {report['load_after']:.2f}."
             + (f" Note: {report['note']}" if report.get("note") else ""), ""]
    if "scorer" in report:
        lines += _speed_markdown(report["scorer"], d)
    return "\n".join(lines + _grammar_markdown(report["grammar"])) + "\n"


def _speed_markdown(s: dict, d: dict) -> list[str]:
    lines = ["## Scorer (the sLM)", "",
             "| items | evaluated tokens | naive tokens | scorer tok/s (evaluated) | raw prefill tok/s | ratio | wall speed-up |",
             "|---|---|---|---|---|---|---|",
             f"| {s['items']} | {s['evaluated_tokens']} | {s['naive_tokens']} | {s['scorer_evaluated_tokens_per_s']:.0f} "
             f"| {s['raw_prefill_tokens_per_s']:.0f} | {s['throughput_ratio']:.2f}x | {s['wall_speedup']:.2f}x |", "",
             "Target: ratio >= 0.9x raw prefill, and fewer evaluated than naive tokens.", "",
             "## Decoding", "",
             "Median (min-max) over repetitions; each ratio is taken within one repetition. The raw lower bound is "
             "the bare LLM decode plus the bare batched sLM decode of each step, with no fusion or sampling.", "",
             "| config | step ms | raw lower bound ms | step / raw | cost over the plain LLM step | tok/s | KV bytes |",
             "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        cost = _fmt(r["cost_over_plain"], "x", 2) if "cost_over_plain" in r else "-"
        lines.append(f"| {r['name']} | {_fmt(r['step_ms'])} | {_fmt(r['raw_step_ms'])} | "
                     f"{_fmt(r['ratio_to_raw'], 'x', 2)} | {cost} | {1e3 / r['step_ms']['median']:.1f} | {r['kv_bytes']} |")
    nv = d["naive"]
    lines += ["", f"Naive ({nv['m'] + 2} llama-cpp-python Llama objects, numpy fusion) at m={nv['m']}: "
              f"{_fmt(nv['step_ms'])} ms/step; Drift is {_fmt(nv['speedup_of_drift'], 'x', 2)} faster.", "",
              f"Peak RSS: {d['rss_mib']:.0f} MiB.", "",
              f"Targets: step <= {TARGET_RATIO:.2f}x raw; faster than naive; KV bytes linear in m.", ""]
    return lines


def run_all(out: Path, quick: bool, llm: Optional[str] = None, slm: Optional[str] = None,
            options: ModelOptions = ModelOptions(), reps: int = 3, note: str = "", tokens: int = 64,
            grammar_only: bool = False) -> dict:
    from .fileio import atomic_write_text
    from .models import load_model

    if reps < 1 or tokens < 1:
        raise DriftError("--reps and --tokens must be at least 1")
    check_out_dir(out)
    load_before = os.getloadavg()[0]
    llm_model, slm_model = load_model(llm, options), load_model(slm, options)
    speed = {}
    if not grammar_only:
        click.echo("benchmarking the scorer...", err=True)
        speed["scorer"] = bench_scorer(slm_model, quick)
        click.echo("benchmarking decoding...", err=True)
        speed["decoding"] = bench_decoding(llm, slm, options, quick, reps, tokens)
    click.echo("benchmarking grammar-constrained decoding...", err=True)
    grammar = bench_grammar(llm, slm, options, reps, tokens)
    report = {"when": time.strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores {platform.processor() or ''}".strip(", "),
              "llm": llm_model.path.name, "slm": slm_model.path.name, "threads": options.n_threads, "quick": quick,
              "load_before": load_before, "load_after": os.getloadavg()[0], "note": note,
              **speed, "grammar": grammar}
    name = report_name(llm, slm, quick, grammar_only)
    atomic_write_text(out / f"{name}.json", json.dumps(report, indent=2))
    atomic_write_text(out / f"{name}.md", _markdown(report))
    click.echo(_markdown(report))
    return report
