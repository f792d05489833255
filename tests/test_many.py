"""approximate-many: one profile per user file, on a local process pool and on a real local Ray cluster."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from drift_cpp.preferences import load_pairs, write_pairs

ATTRS = "concise,humor"
# Fields that differ between two runs of the same fit: when, and how long it took.
VOLATILE = ("created_at", "updated_at", "cost")


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    from drift_cpp.demo import DEMO_PAIRS
    pairs = load_pairs(DEMO_PAIRS)
    d = tmp_path_factory.mktemp("users")
    write_pairs(d / "alice.jsonl", pairs[:3])
    write_pairs(d / "bob.jsonl", pairs[3:6])
    return d


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", *args], capture_output=True,
                          text=True, env=env)


def stable(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def test_pool_fits_each_user_resumes_and_refits_a_changed_one(users, tmp_path, tmp_cache):
    out = tmp_path / "profiles"
    r = cli("approximate-many", str(users), "-o", str(out), "--include", ATTRS, "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["fitted"] == ["alice", "bob"] and report["skipped"] == [] and report["cost"]["items_scored"] > 0
    alice = json.loads((out / "alice.json").read_text())
    assert alice["pair_ids"] == [p.id for p in load_pairs(users / "alice.jsonl")]
    # the same fit as approximate on that user's file, from the scores the driver put in the cache
    single = tmp_path / "single.json"
    r = cli("approximate", str(users / "alice.jsonl"), "-o", str(single), "--include", ATTRS, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cost"]["items_scored"] == 0  # every score came from the cache
    assert stable(single) == stable(out / "alice.json")

    r = cli("approximate-many", str(users), "-o", str(out), "--include", ATTRS, "--json")
    assert json.loads(r.stdout)["skipped"] == ["alice", "bob"]  # up to date: nothing to do

    changed = tmp_path / "changed"
    changed.mkdir()
    pairs = load_pairs(users / "bob.jsonl")
    write_pairs(changed / "alice.jsonl", load_pairs(users / "alice.jsonl"))
    write_pairs(changed / "bob.jsonl", pairs[:2])  # bob's file changed: his profile is fitted again
    r = cli("approximate-many", str(changed), "-o", str(out), "--include", ATTRS, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fitted"] == ["bob"]
    assert json.loads((out / "bob.json").read_text())["n_pairs"] == 2


def test_bad_user_file_is_one_line_before_any_work(users, tmp_path, tmp_cache):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_pairs(bad / "alice.jsonl", load_pairs(users / "alice.jsonl"))
    (bad / "carol.jsonl").write_text('{"prompt": "q", "chosen": "a"}\n')
    r = cli("approximate-many", str(bad), "-o", str(tmp_path / "out"), "--include", ATTRS)
    assert r.returncode == 1 and r.stderr.strip() == f"error: {bad / 'carol.jsonl'}:1: missing field 'rejected'"
    assert not (tmp_path / "out" / "alice.json").exists()


def test_one_users_failure_keeps_the_others_profiles_and_parquet_users_are_fitted(users, tmp_path, tmp_cache):
    # Issue 20: the first user to fail discarded the profiles of those who finished after it (aaron sorts
    # first, so with one worker he fails before the others start), and .parquet users were skipped in silence.
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    d = tmp_path / "pairs"
    d.mkdir()
    write_pairs(d / "alice.jsonl", load_pairs(users / "alice.jsonl"))
    bob = [json.loads(line) for line in (users / "bob.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(bob), d / "bob.parquet")
    too_long = dict(bob[0], id="long", prompt="Tell me more. " * 800)  # over the scorer's context
    (d / "aaron.jsonl").write_text(json.dumps(bob[1]) + "\n" + json.dumps(too_long) + "\n")
    out = tmp_path / "profiles"
    r = cli("approximate-many", str(d), "-o", str(out), "--include", ATTRS, "--workers", "1", "--json")
    assert r.returncode == 1, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: aaron: {d / 'aaron.jsonl'}:2: the prompt (") and "shorten the prompt" in line
    report = json.loads(r.stdout)
    assert report["fitted"] == ["alice", "bob"] and list(report["failed"]) == ["aaron"]
    assert sorted(os.listdir(out)) == ["alice.json", "bob.json"]
    assert json.loads((out / "bob.json").read_text())["pair_ids"] == [p.id for p in load_pairs(d / "bob.parquet")]


def test_the_output_directory_is_checked_before_any_work(users, tmp_path, tmp_cache):
    # Issue 20: `-o` naming the pairs directory wrote profiles there (read as pairs by the next run), and
    # `-o` naming a file was an internal error.
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target, expected in ((users, f"error: -o {users}: is the pairs directory; write the profiles to another "
                                     "directory"),
                             (a_file, f"error: -o {a_file}: not a directory (give the directory the profiles go to)"),
                             (a_file / "sub", f"error: -o {a_file / 'sub'}: cannot create the directory: Not a "
                                              "directory")):
        r = cli("approximate-many", str(users), "-o", str(target), "--include", ATTRS)
        assert r.returncode == 1 and r.stderr == expected + "\n"
    assert sorted(os.listdir(users)) == ["alice.jsonl", "bob.jsonl"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_cluster():
    """A real two-node Ray cluster on this machine (a head and a worker node, one CPU each).

    Each `ray start --block` runs in its own session; the fixture ends exactly those process groups.
    Ray's temp dir is short: its socket paths must fit in 107 bytes, which pytest's tmp_path overruns."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'drift-cpp[ray]')")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    procs = [subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                               "--node-ip-address", "127.0.0.1", "--temp-dir", temp, *common],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([ray_bin, "status", "--address", address], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail("the Ray head did not start")
            time.sleep(1)
        procs.append(subprocess.Popen([ray_bin, "start", "--address", address, "--node-ip-address", "127.0.0.1",
                                       *common], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while "2.0 CPU" not in subprocess.run([ray_bin, "status", "--address", address], env=env,
                                               capture_output=True, text=True).stdout.replace("/", " "):
            if time.monotonic() > deadline:
                pytest.fail("the Ray worker node did not join")
            time.sleep(1)
        yield address
    finally:
        for p in reversed(procs):
            _signal_group(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(p.pid, signal.SIGKILL)  # what the group's processes left running
        shutil.rmtree(temp, ignore_errors=True)


def _signal_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def test_ray_cluster_gives_the_pools_profiles(users, tmp_path, tmp_cache, ray_cluster):
    pool, on_ray = tmp_path / "pool", tmp_path / "ray"
    r = cli("approximate-many", str(users), "-o", str(pool), "--include", ATTRS, "--workers", "1", "--no-cache")
    assert r.returncode == 0, r.stderr
    r = cli("approximate-many", str(users), "-o", str(on_ray), "--include", ATTRS, "--ray", ray_cluster, "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["fitted"]) == ["alice", "bob"]
    for user in ("alice", "bob"):
        assert stable(on_ray / f"{user}.json") == stable(pool / f"{user}.json")
    # the driver filled its local cache with what the cluster scored: approximate scores nothing again
    r = cli("approximate", str(users / "bob.jsonl"), "-o", str(tmp_path / "bob.json"), "--include", ATTRS, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cost"]["items_scored"] == 0
