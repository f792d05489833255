"""Fault injection: the real CLI in a subprocess (--threads 1, its own DRIFT_CPP_CACHE), hit mid-run.

Run with: python -m pytest -q tests/test_faults.py  (a few minutes on 2 cores)

After a signal, a full disk or a read-only location: no partial output, the input unchanged, the score
cache intact (PRAGMA integrity_check) and a rerun resumes; the exit status says what happened.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import AUTH, default_max_body, running

from drift_cpp.demo import DEMO_PAIRS

TIMEOUT = 600  # seconds any one run may take on a busy 2-core machine
PR_CAPBSET_DROP = 24  # prctl option (linux/prctl.h)
ATTRS = "concise,formal"  # 2 attributes + the base: 3 prompts per pair


def pairs_file(directory: Path, n: int) -> Path:
    path = directory / "prefs.jsonl"
    path.write_text("".join(DEMO_PAIRS.read_text().splitlines(keepends=True)[:n]))
    return path


def start(args, cache, preexec_fn=None, **kw):
    env = dict(os.environ, DRIFT_CPP_CACHE=str(cache), PYTHONDONTWRITEBYTECODE="1", HOME=str(cache.parent))
    return subprocess.Popen([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", *map(str, args)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec_fn, **kw)


def finish(proc):
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


def run(args, cache, **kw):
    return finish(start(args, cache, **kw))


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


def rows(cache: Path) -> int:
    db = cache / "scores.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=60) as c:
        try:
            return c.execute("SELECT count(*) FROM scores").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def intact(cache: Path) -> bool:
    with sqlite3.connect(cache / "scores.sqlite", timeout=60) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def wait_for(condition, proc, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def no_output(directory: Path, name: str) -> bool:
    """Neither the file nor a temp file of the atomic write is left."""
    return not [p for p in os.listdir(directory) if p == name or p.startswith(f".{name}.")]


# --- signals mid-fit ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_signal_mid_fit_leaves_nothing_and_the_rerun_resumes(tmp_path, sig, status):
    prefs, cache = pairs_file(tmp_path, 6), tmp_path / "cache"
    before = prefs.read_bytes()
    total = 6 * 3 * 2  # pairs x prompts x (chosen, rejected)
    args = ["approximate", prefs, "-o", tmp_path / "me.json", "--include", ATTRS]
    proc = start(args, cache)
    wait_for(lambda: rows(cache) >= 16, proc, "the first chunk of scores was stored")
    proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == status, err
    if sig == signal.SIGINT:
        assert err.rstrip().endswith("interrupted") and "Traceback" not in err
    assert no_output(tmp_path, "me.json") and prefs.read_bytes() == before
    assert intact(cache)
    stored = rows(cache)
    assert 16 <= stored < total  # the interrupted run kept whole chunks only
    code, out, err = run(args, cache)
    assert code == 0, err
    assert rows(cache) == total and intact(cache)  # the rerun scored only the rest
    assert json.loads((tmp_path / "me.json").read_text())["n_pairs"] == 6


# --- signals mid-generate ----------------------------------------------------------------------


def start_generation(tmp_path):
    cache = tmp_path / "cache"
    proc = start(["generate", "--max-tokens", "400", "--temperature", "0",
                  "--prompt", "Write a very long story about a lighthouse keeper, in many chapters."], cache)
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready and proc.stdout.read(1), "no token was generated"
    return proc, cache


def test_sigkill_mid_generate(tmp_path):
    proc, cache = start_generation(tmp_path)
    proc.kill()
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL and os.listdir(tmp_path) in ([], ["cache"])


def test_sigint_mid_generate_exits_130(tmp_path, request):
    proc, cache = start_generation(tmp_path)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    if code == 0:  # the engine stops cleanly, but the CLI reports success: the lead's fix (binding/decoding)
        request.applymarker(pytest.mark.xfail(reason="SIGINT during generate exits 0 until the lead's "
                                                     "binding/decoding change lands", strict=False))
    assert code == 130, (code, err)
    assert "Traceback" not in err


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_fits_on_one_cache_give_identical_profiles(tmp_path):
    prefs, cache = pairs_file(tmp_path, 4), tmp_path / "cache"
    procs = [start(["approximate", prefs, "-o", tmp_path / f"{name}.json", "--include", ATTRS], cache)
             for name in ("a", "b")]
    for proc in procs:
        code, _, err = finish(proc)
        assert code == 0, err
    a, b = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b"))
    for profile in (a, b):  # when and at what cost each run made it differ; the profile itself must not
        del profile["created_at"], profile["updated_at"], profile["cost"]
    assert a == b and a["n_pairs"] == 4
    assert rows(cache) == 4 * 3 * 2 and intact(cache)


OPEN_AT_ONCE = """
import sys, time
from drift_cpp.score.cache import ScoreCache
start = float(sys.argv[2])
while time.time() < start:
    pass
ScoreCache(sys.argv[1]).put_many([("key", 1.0, 1)])
"""


def test_runs_opening_a_fresh_cache_at_once_all_succeed(tmp_path):
    # Turning a new file to WAL mode skips SQLite's busy wait: without the retry, about 1 open in 20 failed here.
    for attempt in range(10):  # a race: 80 opens make it show nearly every time without the fix
        path, start_at = tmp_path / f"{attempt}.sqlite", time.time() + 2
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(path), str(start_at)],
                                  stderr=subprocess.PIPE) for _ in range(8)]
        for proc in procs:
            assert proc.wait(timeout=TIMEOUT) == 0, proc.stderr.read().decode()
            proc.stderr.close()
        assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM scores").fetchone() == (1,)


# --- read-only and full locations --------------------------------------------------------------


def without_root_override():
    """Root ignores file modes: drop that power (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) in the child."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_locations(tmp_path):
    prefs = pairs_file(tmp_path, 2)
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "me.json").write_text("old profile")
    ro.chmod(0o555)
    before = prefs.read_bytes()
    cases = [
        (["-o", ro / "me.json"], tmp_path / "cache", f"error: {ro}/me.json: directory {ro} is not writable"),
        (["-o", tmp_path / "me.json"], ro / "cache", f"error: {ro}/cache: cannot create the cache directory"),
        (["-o", tmp_path / "me.json"], ro, f"error: {ro}: the cache directory is not writable"),
    ]
    try:
        for extra, cache, expected in cases:
            code, _, err = run(["approximate", prefs, "--include", ATTRS, *extra], cache,
                               preexec_fn=without_root_override)
            assert code == 1 and one_line_error(err).startswith(expected), err
        assert (ro / "me.json").read_text() == "old profile" and os.listdir(ro) == ["me.json"]
        assert prefs.read_bytes() == before and not (tmp_path / "me.json").exists()
    finally:
        ro.chmod(0o755)


def full_disk():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))


def test_full_disk_keeps_the_old_profile(tmp_path):
    prefs, cache = pairs_file(tmp_path, 2), tmp_path / "cache"
    out = tmp_path / "me.json"
    out.write_text("old profile")
    code, _, err = run(["approximate", prefs, "-o", out, "--include", "concise", "--no-cache"], cache,
                       preexec_fn=full_disk)
    assert code == 1 and one_line_error(err) == f"error: {out}: cannot write: File too large", err
    # (the cache directory holds the models' identities, written even with --no-cache)
    assert out.read_text() == "old profile" and sorted(set(os.listdir(tmp_path)) - {"cache"}) == ["me.json", "prefs.jsonl"]


# --- a corrupted cache -------------------------------------------------------------------------


def test_corrupted_cache_is_one_clear_line(tmp_path):
    prefs, cache = pairs_file(tmp_path, 2), tmp_path / "cache"
    cache.mkdir()
    (cache / "scores.sqlite").write_bytes(b"this is not a database" * 100)
    code, _, err = run(["approximate", prefs, "-o", tmp_path / "me.json", "--include", ATTRS], cache)
    assert code == 1, err
    line = one_line_error(err)
    assert line.startswith(f"error: {cache}/scores.sqlite: the score cache is corrupt")
    assert line.endswith("delete it or run with --no-cache") and not (tmp_path / "me.json").exists()


# --- a server one client cannot freeze ---------------------------------------------------------


def test_big_bodies_do_not_stall_the_other_clients(tmp_path):
    """Issue 20: while one client sent a 20 MB body, GET /v1/models took 9-12 s. Now a body over the
    limit is refused as it arrives (413), and one under it is checked off the event loop: another
    client's polls stay fast throughout (a liveness bound, not a benchmark)."""
    limit = default_max_body()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    with running(tmp_path, profiles, "--n-ctx", "512") as (base, _):
        model = httpx.get(f"{base}/v1/models", headers=AUTH).json()["data"][0]["id"]

        def body(size: int, stream: bool = False) -> bytes:
            content = "ocean " * (size // 6)
            return json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                               "max_tokens": 1, "stream": stream}).encode()

        huge, under = body(20 * 2**20), body(limit - 1000)
        sends = {"20 MB": huge, "20 MB chunked": (huge[i:i + 2**16] for i in range(0, len(huge), 2**16)),
                 "under the limit": under, "under the limit, streamed": body(limit - 1000, stream=True)}
        polls, sending = [], threading.Event()

        def poll():
            with httpx.Client(base_url=base, headers=AUTH, timeout=TIMEOUT) as client:
                for _ in range(100_000):  # stops once the sends are done
                    if not sending.is_set():
                        return
                    began = time.monotonic()
                    status = client.get("/v1/models").status_code
                    polls.append((status, time.monotonic() - began))

        sending.set()
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            with httpx.Client(base_url=base, headers={**AUTH, "content-type": "application/json"},
                              timeout=TIMEOUT) as client:
                statuses = {what: client.post("/v1/chat/completions", content=content).status_code
                            for what, content in sends.items()}
        finally:
            sending.clear()
            poller.join(timeout=TIMEOUT)
    # under the limit: read, then refused for its prompt (over the context), the stream before it starts
    assert statuses == {"20 MB": 413, "20 MB chunked": 413, "under the limit": 400,
                        "under the limit, streamed": 400}, statuses
    assert len(polls) > len(sends) and {status for status, _ in polls} == {200}
    assert max(seconds for _, seconds in polls) < 2, sorted(seconds for _, seconds in polls)[-5:]
