"""Issue 20, the learning half: feedback is scored before it is recorded, a list of picks is applied whole or
not at all, and pair ids cannot collide across files. Real models throughout: the embedded SmolLM2 at
--threads 1, a real server over HTTP, the real CLI."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.preferences import load_pairs
from drift_cpp.fit.profile import Profile
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer
from test_reliability import run

ATTRS = "concise,humor"
# About 3,600 tokens: more than the scorer's 2,048-token context under any attribute prompt.
LONG = "Tell me more about this. " * 600


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    profiles = root / "profiles"
    profiles.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "serve", "--profiles",
                             str(profiles), "--port", str(port), "--include", ATTRS, "--n-ctx", "512"],
                            env=dict(os.environ, DRIFT_CPP_CACHE=str(root / "cache")), stdout=log,
                            stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-2000:]
            try:
                if http.get("/v1/models").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield http, profiles
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        assert "Traceback" not in (root / "server.log").read_text()


def _pick(user, prompt="Is it raining?"):
    return {"user": user, "prompt": prompt, "chosen": "Yes, take an umbrella.",
            "rejected": "Weather is a complex phenomenon with many contributing factors to consider."}


def test_a_pick_that_cannot_be_scored_is_refused_and_never_blocks_the_next(server):
    # The repro: a 3,000-token prompt got a 400 but stayed in erin.pairs.jsonl, so every later pick got it too.
    http, profiles = server
    r = http.post("/v1/preferences", json=_pick("erin", LONG))
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("body: the prompt (") and "shorten the prompt by at least" in message, message
    assert "--max-response-tokens" not in message  # it cannot shorten a prompt
    assert not (profiles / "erin.pairs.jsonl").exists() and not (profiles / "erin.json").exists()
    r = http.post("/v1/preferences", json=_pick("erin"))
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["n_pairs"] == 1
    assert [p.prompt[-1].content for p in load_pairs(profiles / "erin.pairs.jsonl")] == ["Is it raining?"]


def test_a_list_of_picks_is_applied_whole_or_not_at_all(server):
    # The repro: a list for several users got a 400 while the good users' files were already written.
    http, profiles = server
    r = http.post("/v1/preferences", json=[_pick("frank"), _pick("gina", LONG)])
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("body[1]: the prompt ("), r.text
    assert not [name for name in os.listdir(profiles) if name.startswith(("frank", "gina"))]
    r = http.post("/v1/preferences", json=[_pick("frank"), _pick("gina", "Will it snow?")])
    assert r.status_code == 200 and [e["n_pairs"] for e in r.json()["data"]] == [1, 1], r.text
    for user in ("frank", "gina"):
        assert (profiles / f"{user}.json").exists() and len(load_pairs(profiles / f"{user}.pairs.jsonl")) == 1


def _two_folders(tmp_path):
    """a/prefs.jsonl and b/prefs.jsonl: same name, different pairs, no ids (the demo's first and next 3)."""
    from drift_cpp.demo import DEMO_PAIRS
    records = [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines()]
    for folder, part in (("a", records[:3]), ("b", records[3:6])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "prefs.jsonl").write_text("".join(
            json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for r in part))
    return tmp_path / "a" / "prefs.jsonl", tmp_path / "b" / "prefs.jsonl"


def test_profile_update_from_another_folders_file_of_the_same_name_adds_its_pairs(tmp_path, tmp_cache):
    # The repro: `profile update me.json b/prefs.jsonl` after a/prefs.jsonl said "added 0 new pairs".
    a, b = _two_folders(tmp_path)
    me = tmp_path / "me.json"
    assert run("--threads", "1", "approximate", a, "-o", me, "--include", ATTRS)[0] == 0
    code, _ = run("--threads", "1", "profile", "update", me, b)
    assert code == 0 and Profile.load(me).n_pairs == 6
    code, _ = run("--threads", "1", "profile", "update", me, a)
    assert code == 0 and Profile.load(me).n_pairs == 6


def _as_before_content_ids(path, name, keep_rows=True):
    """The profile at path as drift-cpp wrote it before content ids: pair i (from 0) named `<name>:<i + 1>`,
    and, with keep_rows False, as profiles before bags of words and prompt groups were recorded."""
    data = json.loads(path.read_text())
    data["pair_ids"] = [f"{name}:{i + 1}" for i in range(data["n_pairs"])]
    for i, row in enumerate(data["features"]["rows"]):
        row["id"] = f"{name}:{i + 1}"
        if not keep_rows:
            row.pop("bow", None), row.pop("group", None)
    path.write_text(json.dumps(data))


def test_a_profile_with_file_line_ids_keeps_its_pairs_and_takes_another_files(smollm, tmp_path, tmp_cache):
    a, b = _two_folders(tmp_path)
    attrs = builtin_attributes().select(ATTRS.split(","))
    scorer = Scorer(smollm, cache=ScoreCache(), max_response_tokens=16, progress=False)  # the second round: cached
    fit = Profile.fit(load_pairs(a), scorer, attrs)
    for keep_rows in (True, False):
        me = tmp_path / f"me-{keep_rows}.json"
        fit.save(me)
        _as_before_content_ids(me, "prefs.jsonl", keep_rows)
        old = Profile.load(me)
        # The same file again: nothing is new; the rows take the pairs' content ids, their values unchanged.
        assert old.update(load_pairs(a), scorer) == 0
        assert old.pair_ids == [p.id for p in load_pairs(a)] and np.allclose(old.W, fit.W)
        old.save(me)
        _as_before_content_ids(me, "prefs.jsonl", keep_rows)
        old = Profile.load(me)
        if keep_rows:  # b's pairs share a's old ids, but not their words: all three are new
            assert old.update(load_pairs(b), scorer) == 3 and old.pair_ids[:3] == ["prefs.jsonl:1", "prefs.jsonl:2",
                                                                                    "prefs.jsonl:3"]
            assert old.pair_ids[3:] == [p.id for p in load_pairs(b)]
        # add-attributes finds each row's pair by its old id too
        old.add_attributes(builtin_attributes().select(["formal"]).attributes, load_pairs(a) + load_pairs(b), scorer)
        assert old.W.shape[1] == 3


def test_chat_checks_the_pairs_file_and_the_folder_before_generating_the_two_answers(tmp_path):
    # The repro: a corrupt pairs file or a read-only folder failed only after both answers were generated.
    from test_faults import without_root_override
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "me.pairs.jsonl").write_text('{"prompt": "hi", "chosen": "a", \n')
    (tmp_path / "ro").mkdir(mode=0o555)
    expected = {"corrupt": f"error: {tmp_path / 'corrupt' / 'me.pairs.jsonl'}:1: invalid JSON",
                "ro": f"error: {tmp_path / 'ro' / 'me.json'}: directory {tmp_path / 'ro'} is not writable"}
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))
    try:
        for folder, error in expected.items():
            chat = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "chat", "--profile",
                                   str(tmp_path / folder / "me.json"), "--learn", "1", "--max-tokens", "4"],
                                  input="Say hi.\n1\n", env=env, capture_output=True, text=True, timeout=600,
                                  preexec_fn=without_root_override)
            assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
            assert error in chat.stderr, chat.stderr
            assert " | " not in chat.stdout  # no side-by-side answers were generated
    finally:
        (tmp_path / "ro").chmod(0o755)
