"""`drift-cpp bench`: options checked before measuring, and the quick run as a smoke test (no timing asserts)."""

import json
import os
import subprocess
import sys

from drift_cpp.bench import report_name


def _bench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "bench", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


def test_an_unwritable_out_is_refused_before_anything_runs(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    run = _bench("--quick", "--out", str(blocker / "results"))
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: --out {blocker / 'results'}: not a writable directory")
    assert "benchmarking" not in run.stderr  # refused before measuring


def test_report_names_keep_the_default_apart_from_a_pair():
    assert report_name(None, None, False) == "bench"
    assert report_name(None, None, True) == "bench-quick"
    assert report_name("qwen-1.5b", "qwen-0.5b", False) == "bench-qwen-1.5b-qwen-0.5b"
    assert report_name("/models/My-8B.gguf", "/models/My-1B.gguf", True) == "bench-My-8B-My-1B-quick"
    assert report_name(None, None, True, grammar_only=True) == "bench-grammar-quick"


def test_quick_bench_writes_every_configuration(tmp_path):
    run = _bench("--quick", "--out", str(tmp_path), "--note", "smoke test")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["bench-quick.json", "bench-quick.md"]
    report = json.loads((tmp_path / "bench-quick.json").read_text())
    assert report["threads"] == 1 and report["note"] == "smoke test"
    rows = {r["name"]: r for r in report["decoding"]["rows"]}
    assert list(rows) == ["plain LLM", "drift m=1", "drift m=3"]
    for r in rows.values():
        assert r["tokens"] > 0 and r["step_ms"]["min"] <= r["step_ms"]["median"] <= r["step_ms"]["max"]
        assert r["raw_step_ms"]["median"] > 0
    assert rows["drift m=1"]["kv_bytes"] < rows["drift m=3"]["kv_bytes"]  # one KV cache per attribute
    assert "cost_over_plain" in rows["drift m=3"] and "cost_over_plain" not in rows["plain LLM"]
    assert report["decoding"]["naive"]["m"] == 3
    grammar = {r["name"]: r for r in report["grammar"]["rows"]}
    assert list(grammar) == ["plain LLM", "drift m=3"]
    for r in grammar.values():  # each answer held to the schema's grammar begins its JSON object
        assert r["grammar_answer"].lstrip().startswith("{") and r["tokens_grammar"] > 0
        assert r["grammar_step_ms"]["median"] > 0 and r["free_step_ms"]["median"] > 0
    md = (tmp_path / "bench-quick.md").read_text()
    assert "| drift m=3 |" in md and "Note: smoke test" in md and "## Grammar-constrained decoding" in md
