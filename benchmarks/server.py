"""drift-cpp serve against the Python API, and 4 concurrent users against the same 4 one at a time.

    python benchmarks/server.py [--threads 1] [--reps 3] [--tokens 48] [--note TEXT]

Writes benchmarks/results/server.md and server.json. Everything runs on the embedded model, the
server in a subprocess on a free localhost port, both at --threads N. Configurations are interleaved
within each repetition (their order rotated), each ratio is taken within one repetition, and the
report gives the median and the min-max over repetitions, with the machine's load average.

- 1 client: time to first token (TTFT) and decode tokens/s of one streamed answer, through the
  server (the official openai client) and through Drift.stream in this process, plain and with a
  profile. Each repetition asks new prompts, so prompts are evaluated, not found in the KV cache.
- 4 users (4 profiles of one layout, or 4 plain requests): aggregate tokens/s when the 4 are sent
  at once (the server batches them: one llama_decode per step) against the same 4 sent one after
  another, both through the server.
- What batching can gain: the bare decode step (Engine.raw_steps) with 1, 4, 8 and 16 sequences in
  one llama_decode. A plain request decodes 1 sequence per step, one of these profiles 4.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai

from drift_cpp.steer.session import Drift
from drift_cpp.fileio import atomic_write_text
from drift_cpp.steer.formula import Formula
from drift_cpp.models import ModelOptions, load_model
from drift_cpp.params import EngineOptions, Sampling
from drift_cpp.fit.profile import Profile
from drift_cpp.runtime import _core

N_CTX = 1024
RAW_SEQUENCES = (1, 4, 8, 16)
USERS = {  # four profiles of one layout (3 attributes): one engine lane serves them together
    "u0": {"concise": 0.7, "humor": -0.5, "formal": 0.5},
    "u1": {"concise": -0.6, "humor": 0.6, "formal": 0.5},
    "u2": {"vivid": 0.6, "easy": 0.6, "direct": 0.5},
    "u3": {"analytic": 0.7, "empathetic": 0.5, "creative": -0.5},
}
TOPICS = ["the ocean", "volcanoes", "the moon", "bread", "rivers", "trains", "bees", "glaciers", "clocks", "maps",
          "salt", "owls", "bridges", "tea", "comets", "forests"]


def _prompt(rep: int, i: int, kind: str = "essay") -> list[dict]:
    """A prompt no earlier request of the run has asked: its KV caches hold at most the system prompts."""
    return [{"role": "user", "content": f"Take {rep}. Write a long, detailed {kind} about {TOPICS[i % len(TOPICS)]}."}]


def _timed(pieces) -> dict:
    """TTFT and decode tokens/s of a stream of (text, n_tokens_so_far) pieces."""
    start = time.perf_counter()
    first = last = None
    n = 0
    for _ in pieces:
        n += 1
        last = time.perf_counter()
        if first is None:
            first = last
    return {"ttft_s": first - start, "tokens": n,
            "decode_tok_s": (n - 1) / (last - first) if n > 1 and last > first else 0.0}


def _server_stream(client, model, messages, user, tokens):
    stream = client.chat.completions.create(model=model, messages=messages, user=user, stream=True,
                                            temperature=0, max_tokens=tokens)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


def _aggregate(client, model, users, rep, tokens, together: bool) -> dict:
    counts = [0] * len(users)

    def ask(i):
        # The two ways get the two halves of the topics, swapped every repetition.
        topic = i + (8 if together == (rep % 2 == 0) else 0)
        r = client.chat.completions.create(model=model, messages=_prompt(rep, topic, "story"), user=users[i],
                                           temperature=0, max_tokens=tokens)
        counts[i] = r.usage.completion_tokens

    start = time.perf_counter()
    if together:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(users))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(len(users)):
            ask(i)
    seconds = time.perf_counter() - start
    return {"tokens": sum(counts), "seconds": seconds, "tok_s": sum(counts) / seconds}


def _raw_step_ms(model, n: int, steps: int = 16) -> float:
    """One decode step of n sequences (after the same prompt), in ms: no fusion, no sampling."""
    engine = _core.Engine([model.core], [[0] * n], n_ctx=256, n_batch=512, n_threads=model.options.n_threads)
    engine.sync(0, [model.tokenize_prompt(model.render(_prompt(0, 0)))] * n)
    start = time.perf_counter()
    engine.raw_steps(steps)
    return 1000 * (time.perf_counter() - start) / steps


def _summary(values) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    out = Path(args.out)
    model = load_model(None, ModelOptions(threads=args.threads))
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp)
        for user, weights in USERS.items():  # a profile's p has unit norm
            norm = sum(w * w for w in weights.values()) ** 0.5
            Profile.with_weights(model, {a: w / norm for a, w in weights.items()}).save(profiles / f"{user}.json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(profiles / "server.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "drift_cpp.cli", "--threads", str(args.threads), "serve",
                                   "--profiles", str(profiles), "--port", str(port), "--n-ctx", str(N_CTX)],
                                  stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if httpx.get(f"{base}/v1/models").status_code == 200:
                        break
                except httpx.TransportError:
                    if server.poll() is not None:
                        sys.exit(f"the server exited: {(profiles / 'server.log').read_text()[-2000:]}")
                    time.sleep(0.2)
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=3600)
            served = client.models.list().data[0].id
            api = {"plain": Drift(formula=Formula.plain(), engine=EngineOptions(N_CTX), options=model.options),
                   "profile": Drift(profile=Profile.load(profiles / "u0.json"), engine=EngineOptions(N_CTX),
                                    options=model.options)}
            sampling = Sampling(temperature=0, max_tokens=args.tokens)
            configs = {
                **{f"1 client {kind}: server": (lambda rep, kind=kind: _timed(_server_stream(
                    client, served, _prompt(rep, 0), None if kind == "plain" else "u0", args.tokens)))
                   for kind in ("plain", "profile")},
                **{f"1 client {kind}: Python API": (lambda rep, kind=kind: _timed(api[kind].stream(
                    _prompt(rep, 0), sampling))) for kind in ("plain", "profile")},
                **{f"4 users {kind}: {how}": (lambda rep, kind=kind, how=how: _aggregate(
                    client, served, list(USERS) if kind == "profile" else [None] * 4, rep, args.tokens,
                    how == "at once")) for kind in ("plain", "profile") for how in ("at once", "one at a time")},
                **{f"raw step {n}": (lambda rep, n=n: {"ms": _raw_step_ms(model, n)}) for n in RAW_SEQUENCES},
            }
            names = list(configs)
            runs = {name: [] for name in names}
            for rep in range(args.reps + 1):  # repetition 0 warms up (engines made, pages touched); not reported
                order = names[rep % len(names):] + names[:rep % len(names)]
                for name in order:
                    result = configs[name](rep)
                    if rep:
                        runs[name].append(result)
                loads.append(os.getloadavg()[0])
                print(f"repetition {rep} done, load {loads[-1]:.2f}", file=sys.stderr)
            slots = httpx.get(f"{base}/slots").json()
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    report = {"threads": args.threads, "reps": args.reps, "tokens": args.tokens, "n_ctx": N_CTX,
              "load_average": loads, "note": args.note, "runs": runs,
              "batches_by_lane": {lane["lane"]: lane["batches"] for lane in slots}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "server.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "server.md", _markdown(report))
    print((out / "server.md").read_text())


def _markdown(r: dict) -> str:
    runs = r["runs"]
    lines = [f"# drift-cpp serve: overhead and batching ({r['tokens']} tokens, --threads {r['threads']}, "
             f"{r['reps']} repetitions)", "",
             "Command: `python benchmarks/server.py --threads {} --reps {} --tokens {}`. Median (min-max) over "
             "repetitions; ratios within each repetition. Greedy decoding, embedded model (SmolLM2-135M Q4_1), "
             "n_ctx {}.".format(r["threads"], r["reps"], r["tokens"], r["n_ctx"]), "",
             f"Load average (1 min) at start, after each repetition: {', '.join(f'{x:.2f}' for x in r['load_average'])}"
             + (f". {r['note']}" if r["note"] else "."), "",
             "## 1 client: the server against the Python API", "",
             "| decoding | TTFT server (ms) | TTFT API (ms) | TTFT overhead | tok/s server | tok/s API | tok/s overhead |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("plain", "profile"):
        s, a = runs[f"1 client {kind}: server"], runs[f"1 client {kind}: Python API"]
        ttft_over = [x["ttft_s"] / y["ttft_s"] - 1 for x, y in zip(s, a)]
        tok_over = [1 - x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(s, a)]
        lines.append(f"| {kind} | {_summary([1000 * x['ttft_s'] for x in s])} | "
                     f"{_summary([1000 * x['ttft_s'] for x in a])} | {_summary([100 * v for v in ttft_over])} % | "
                     f"{_summary([x['decode_tok_s'] for x in s])} | {_summary([x['decode_tok_s'] for x in a])} | "
                     f"{_summary([100 * v for v in tok_over])} % |")
    lines += ["", "Overheads: TTFT server / API - 1, and 1 - tok/s server / API (positive: the server is slower). "
              "Tokens/s is the decode rate after the first token; the server's pieces are SSE events.", "",
              "## 4 users: sent at once (batched) against one at a time", "",
              "| decoding | at once (tok/s) | one at a time (tok/s) | speed-up |", "|---|---|---|---|"]
    for kind in ("plain", "profile"):
        together, alone = runs[f"4 users {kind}: at once"], runs[f"4 users {kind}: one at a time"]
        lines.append(f"| {kind} | {_summary([x['tok_s'] for x in together])} | "
                     f"{_summary([x['tok_s'] for x in alone])} | "
                     f"{_summary([x['tok_s'] / y['tok_s'] for x, y in zip(together, alone)])}x |")
    lines += ["", "## What batching can gain: one decode step with n sequences", "",
              "| sequences per llama_decode | ms per step | ms per sequence |", "|---|---|---|"]
    for n in RAW_SEQUENCES:
        ms = [x["ms"] for x in runs[f"raw step {n}"]]
        lines.append(f"| {n} | {_summary(ms)} | {_summary([v / n for v in ms])} |")
    lines += ["", "Batches run per engine lane (batch size: count), warm-up included: "
              + "; ".join(f"{lane}: {batches}" for lane, batches in r["batches_by_lane"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
