"""Benchmarks, measured side by side in one run (absolute times on shared machines are noise).

Scorer: tokens/s against raw llama.cpp prefill of the same items, and tokens saved by prefix sharing.
Decoding: plain, Drift at m = 1, 3, 7, 15, the raw decode calls alone, and the naive way
(m + 2 llama-cpp-python Llama objects fused with numpy); memory at each m.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click
import numpy as np

DSP = Path("../shared/data/dsp/dsp_dev.jsonl")
QUESTIONS = ["Tell me about the ocean.", "How do plants grow?", "What makes a good friend?",
             "Explain how a bicycle works.", "Why do we sleep?", "What is a black hole?"]
SYSTEMS = ["You are an AI assistant.", "You are a humorous AI assistant.", "You are an analytic AI assistant."]
M_VALUES = (1, 3, 7, 15)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_scorer(model, quick: bool) -> dict:
    """Our scorer vs llama-cpp-python's Llama.eval prefill of each prompt + response."""
    from .runtime import reference_llama

    from .scorer import ScoreRequest, Scorer

    n_q = 2 if quick else 6
    responses = [
        "The answer depends on several factors, which I will explain step by step in plain words. " * (k + 1)
        for k in range(3)
    ]
    requests = [ScoreRequest(s, (("user", q),), r) for s in SYSTEMS for q in QUESTIONS[:n_q] for r in responses]
    scorer = Scorer(model, progress=False)
    work = [scorer.tokens(r, model.render(scorer._messages(r))) for r in requests]

    start = time.perf_counter()
    scorer.core.score(work, False)
    ours = time.perf_counter() - start
    stats = scorer.core.stats

    llm = reference_llama(model.path, n_ctx=2048, n_batch=512, n_threads=model.options.n_threads)
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


def _profile_with(model, m: int):
    """Random unit weights on the first m attributes of the library."""
    from .attributes import builtin_attributes
    from .profile import Profile

    w = np.random.default_rng(m).normal(size=m)
    w /= np.linalg.norm(w)
    return Profile.with_weights(model, dict(zip(builtin_attributes().ids[:m], w)))


def _naive_steps(model, systems: list[str], weights, beta: float, n: int, prompt: str) -> float:
    """What a user would write: one Llama per prompt (LLM, base, each attribute), fused in numpy."""
    from .runtime import reference_llama

    llms = [reference_llama(model.path, n_ctx=1024, n_threads=model.options.n_threads, logits_all=True)
            for _ in systems]
    for llm, s in zip(llms, systems):
        text = model.render([{"role": "system", "content": s}, {"role": "user", "content": prompt}])
        llm.eval(model.tokenize_prompt(text))
    start = time.perf_counter()
    for _ in range(n):
        h = [np.array(llm.scores[llm.n_tokens - 1]) for llm in llms]
        fused = h[0] + sum(w / beta * (hi - h[1]) for w, hi in zip(weights, h[2:]))
        token = int(np.argmax(fused))
        for llm in llms:
            llm.eval([token])
    return (time.perf_counter() - start) / n


def bench_decoding(model, quick: bool) -> dict:
    from .decoding import Drift, Sampling

    n = 16 if quick else 64
    prompt = QUESTIONS[0]
    sampling = Sampling(temperature=0, max_tokens=n)
    rows = []

    def timed(drift: Drift) -> dict:
        # Greedy on a fresh conversation; decode until n tokens even past end-of-generation.
        drift._sync([{"role": "user", "content": prompt}])
        start = time.perf_counter()
        drift.engine.raw_steps(n)
        raw = (time.perf_counter() - start) / n
        drift = Drift(profile=drift.profile, beta=drift.beta)
        out = drift.generate(prompt, sampling)
        return {"step_ms": 1e3 * out.seconds / max(len(out.tokens), 1), "raw_step_ms": 1e3 * raw,
                "tokens": len(out.tokens), "kv_bytes": drift.engine.kv_bytes, "rss_mib": _rss_mib()}

    plain = timed(Drift())
    rows.append({"m": 0, "name": "plain", **plain})
    for m in M_VALUES[:2] if quick else M_VALUES:
        r = timed(Drift(profile=_profile_with(model, m)))
        rows.append({"m": m, "name": f"drift m={m}", **r, "ratio_to_raw": r["step_ms"] / r["raw_step_ms"]})
    m = 3 if quick else 7
    prof = _profile_with(model, m)
    weights = prof.decoding_weights()
    systems = ["You are an AI assistant.", prof.attributes.base.prompt] + [a.prompt for a, _ in weights]
    naive_ms = 1e3 * _naive_steps(model, systems, [w for _, w in weights], 0.5, n, prompt)
    drift_ms = next(r["step_ms"] for r in rows if r["m"] == m)
    return {"tokens_per_config": n, "rows": rows,
            "naive": {"m": m, "step_ms": naive_ms, "speedup_of_drift": naive_ms / drift_ms}}


def _markdown(report: dict) -> str:
    s, d = report["scorer"], report["decoding"]
    lines = [f"# drift-cpp benchmark ({report['when']}, {report['machine']})", "",
             f"Model: {report['model']}; threads: {report['threads']}.", "",
             "## Scorer", "",
             "| items | evaluated tokens | naive tokens | scorer tok/s (evaluated) | raw prefill tok/s | ratio | wall speed-up |",
             "|---|---|---|---|---|---|---|",
             f"| {s['items']} | {s['evaluated_tokens']} | {s['naive_tokens']} | {s['scorer_evaluated_tokens_per_s']:.0f} "
             f"| {s['raw_prefill_tokens_per_s']:.0f} | {s['throughput_ratio']:.2f}x | {s['wall_speedup']:.2f}x |", "",
             "Target: ratio >= 0.9x raw prefill, and fewer evaluated than naive tokens.", "",
             "## Decoding", "",
             "| config | step ms | raw decode-only step ms | step / raw | tok/s | KV bytes | RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        ratio = f"{r['ratio_to_raw']:.2f}x" if "ratio_to_raw" in r else "-"
        lines.append(f"| {r['name']} | {r['step_ms']:.1f} | {r['raw_step_ms']:.1f} | {ratio} | "
                     f"{1e3 / r['step_ms']:.1f} | {r['kv_bytes']} | {r['rss_mib']:.0f} |")
    nv = d["naive"]
    lines += ["", f"Naive ({nv['m'] + 2} llama-cpp-python Llama objects, numpy fusion) at m={nv['m']}: "
              f"{nv['step_ms']:.1f} ms/step; Drift is {nv['speedup_of_drift']:.2f}x faster.", "",
              "Targets: step <= 1.10x raw; >= 1.8x faster than naive at m=7; KV bytes linear in m."]
    return "\n".join(lines) + "\n"


def run_all(out: Path, quick: bool) -> dict:
    from .fileio import atomic_write_text
    from .models import load_model

    model = load_model()
    click.echo("benchmarking the scorer...", err=True)
    scorer = bench_scorer(model, quick)
    click.echo("benchmarking decoding...", err=True)
    decoding = bench_decoding(model, quick)
    report = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {platform.processor() or ''}".strip(", "),
              "model": model.path.name, "threads": model.options.n_threads, "quick": quick,
              "scorer": scorer, "decoding": decoding}
    out.mkdir(parents=True, exist_ok=True)
    name = "bench-quick" if quick else "bench"
    atomic_write_text(out / f"{name}.json", json.dumps(report, indent=2))
    atomic_write_text(out / f"{name}.md", _markdown(report))
    click.echo(_markdown(report))
    return report
