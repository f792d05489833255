"""`drift-cpp serve` driven by the official openai client: a real uvicorn server on a free port.

The embedded model at --threads 1, few tokens. Profiles: 'alice' has given weights (steers at once),
'dave' is taught through /v1/preferences.
"""

import json
import os
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection

import httpx
import openai
import pytest
from serving import AUTH, KEY, default_max_body, free_port, running

from drift_cpp.fit.profile import Profile

PROMPT = [{"role": "user", "content": "Tell me about the ocean."}]
LONG_PROMPT = [{"role": "user", "content": "Write a long essay about the ocean, with ten sections."}]
GREEDY = {"temperature": 0, "max_tokens": 16}


@pytest.fixture(scope="module")
def server(smollm, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    profiles = root / "profiles"
    profiles.mkdir()
    Profile.with_weights(smollm, {"concise": 0.8, "humor": -0.6}).save(profiles / "alice.json")
    Profile.with_weights(smollm, {"concise": -0.6, "humor": 0.8}).save(profiles / "alice2.json")
    with running(root, profiles, "--include", "concise,humor", "--n-ctx", "512") as (base, proc):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        yield {"client": client, "model": model, "base": base, "profiles": profiles, "proc": proc, "root": root}


def _ask(server, messages=PROMPT, **kw):
    kw = {**GREEDY, **kw}
    return server["client"].chat.completions.create(model=server["model"], messages=messages, **kw)


def _streamed(server, messages=PROMPT, **kw):
    kw = {**GREEDY, **kw}
    stream = server["client"].chat.completions.create(model=server["model"], messages=messages, stream=True, **kw)
    chunks = list(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason


def test_models_lists_the_served_model_to_holders_of_the_key(server):
    assert server["model"] == "SmolLM2-135M-Instruct.Q4_1"
    for key in ("wrong", KEY[:-1], KEY + "x"):
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=f"{server['base']}/v1", api_key=key, max_retries=0).models.list()
        assert e.value.body["code"] == "invalid_api_key"
    assert httpx.get(f"{server['base']}/v1/models").status_code == 401


def test_plain_and_streamed_completions_are_the_same_text(server):
    plain = _ask(server)
    text, finish = _streamed(server)
    assert plain.choices[0].message.content == text and text
    assert plain.choices[0].finish_reason == finish
    assert plain.usage.completion_tokens <= GREEDY["max_tokens"] and plain.usage.prompt_tokens > 0


def test_a_users_profile_changes_the_answer_and_a_user_without_one_gets_plain(server):
    plain = _ask(server).choices[0].message.content
    alice = _ask(server, user="alice").choices[0].message.content
    assert alice != plain
    assert _ask(server, user="nobody").choices[0].message.content == plain
    # beta in the extra body: a far larger beta is far weaker steering, so back to the plain answer's start
    weak = _ask(server, user="alice", extra_body={"beta": 1e6}).choices[0].message.content
    assert weak == plain


def test_preferences_create_a_profile_then_add_only_new_pairs(server):
    http = httpx.Client(base_url=server["base"], timeout=300, headers=AUTH)
    pair = {"user": "dave", "prompt": "How do I boil an egg?", "chosen": "Boil it for 8 minutes.",
            "rejected": "Well, there are many ways to think about eggs, and first of all you will need a pot."}
    # As the README shows it, through the openai client.
    (entry,) = server["client"].post("/preferences", cast_to=object, body=pair)["data"]
    assert entry["user"] == "dave" and entry["added"] == 1 and entry["n_pairs"] == 1
    assert not entry["steering"]  # one pair is below MIN_PROFILE_PAIRS: still plain decoding
    assert {a["id"] for a in entry["top_attributes"]} == {"concise", "humor"}
    assert (server["profiles"] / "dave.json").exists()
    lines = (server["profiles"] / "dave.pairs.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["chosen"] == pair["chosen"]
    again = http.post("/v1/preferences", json=[pair, {**pair, "chosen": "Eight minutes in boiling water."}])
    assert [e["added"] for e in again.json()["data"]] == [1] and again.json()["data"][0]["n_pairs"] == 2
    report = http.get("/v1/profiles/dave").json()
    assert report["n_pairs"] == 2 and {a["id"] for a in report["attributes"]} == {"concise", "humor"}
    assert http.get("/v1/profiles/nobody").status_code == 404
    r = http.post("/v1/preferences", json={**pair, "user": "alice"})  # her weights were given, not learned
    assert r.status_code == 400 and "weights were given" in r.json()["error"]["message"]
    assert not (server["profiles"] / "alice.pairs.jsonl").exists()


def test_bad_requests_are_openai_shaped_errors(server):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server, temperature=-1)
    assert "temperature" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server, messages=[{"role": "wizard", "content": "hi"}])
    assert e.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.NotFoundError) as e:
        server["client"].chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert e.value.body["code"] == "model_not_found"
    http = httpx.Client(base_url=server["base"], headers=AUTH)
    for body in (b"{not json", b"[]", json.dumps({"model": server["model"]}).encode()):
        r = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    r = http.post("/v1/preferences", json={"user": "dave", "prompt": "hi", "chosen": "same", "rejected": "same"})
    assert r.status_code == 400 and "identical" in r.json()["error"]["message"]


@pytest.mark.parametrize("user", ["../alice", "a/b", "..", ".hidden", "x" * 65, "alice\x00"])
def test_a_user_name_that_could_leave_the_profiles_directory_is_refused(server, user):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server, user=user)
    assert e.value.body["param"] == "user"
    r = httpx.post(f"{server['base']}/v1/preferences", headers=AUTH,
                   json={"user": user, "prompt": "hi", "chosen": "a", "rejected": "b"})
    assert r.status_code == 400
    assert {p.name for p in server["profiles"].parent.iterdir()} <= {"cache", "profiles", "server.log"}


def _interrupted(server) -> tuple[list[dict], list[dict]]:
    """The last answers of the slots that were interrupted, once no slot is busy; and the slots."""
    http = httpx.Client(base_url=server["base"], headers=AUTH)
    for _ in range(600):  # the state changes once the engine stops; bounded, not a timing assert
        slots = [s for lane in http.get("/slots").json() for s in lane["slots"]]
        if not any(s["busy"] for s in slots) and any(s["last"].get("finish_reason") == "interrupted" for s in slots):
            break
        time.sleep(0.1)
    return [s["last"] for s in slots if s["last"].get("finish_reason") == "interrupted"], slots


def test_a_client_leaving_mid_stream_stops_its_generation_and_frees_its_session(server):
    max_tokens = 400
    stream = server["client"].chat.completions.create(model=server["model"], messages=PROMPT, user="alice",
                                                      stream=True, temperature=0.8, max_tokens=max_tokens,
                                                      stop=["never-in-the-answer"])
    for _, _chunk in zip(range(4), stream):
        pass
    stream.close()
    stopped, slots = _interrupted(server)
    assert stopped and stopped[0]["completion_tokens"] < 20, slots
    assert _ask(server, user="alice").choices[0].finish_reason in ("stop", "length")


def test_a_client_leaving_a_request_answered_in_one_piece_stops_its_generation(server):
    max_tokens = 1000
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before the answer is done
        httpx.post(f"{server['base']}/v1/chat/completions", headers=AUTH, timeout=httpx.Timeout(10, read=1.0),
                   json={"model": server["model"], "messages": LONG_PROMPT, "user": "alice", "temperature": 0.8,
                         "max_tokens": max_tokens, "stop": ["never-in-the-answer"]})
    stopped, slots = _interrupted(server)
    assert stopped and stopped[0]["completion_tokens"] < max_tokens // 2, slots


def test_three_concurrent_clients_each_get_exactly_their_solo_answer(server):
    # Greedy: a sampled answer can change with the KV caches' history (a prompt reused from the cache
    # re-evaluates one token, which rounds differently from the whole prompt), batched or not.
    requests = [dict(user="alice"), dict(), dict(user="alice2", messages=[{"role": "user", "content": "Name three fruits."}])]
    solo = [_ask(server, **r).choices[0].message.content for r in requests]
    results = [None] * len(requests)

    def call(i):
        results[i] = _ask(server, **requests[i]).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == solo
    assert len(set(solo)) == 3


def _answer_to_an_unfinished_body(server, headers: dict, chunks=()) -> tuple[int, dict]:
    """The answer to a POST whose body is never finished: it can come only if the server stops reading."""
    conn = HTTPConnection(*server["base"].removeprefix("http://").split(":"), timeout=60)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        for name, value in {**AUTH, "content-type": "application/json", **headers}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())["error"]
    finally:
        conn.close()


def test_a_body_over_the_limit_is_a_413_before_it_is_read(server):
    limit = default_max_body()
    status, error = _answer_to_an_unfinished_body(server, {"content-length": str(10**9)})
    assert status == 413 and error["code"] == "request_too_large" and str(limit) in error["message"], error
    chunk = b" " * 2**16  # no length to check: counted as it arrives, and refused once past the limit
    status, error = _answer_to_an_unfinished_body(server, {"transfer-encoding": "chunked"},
                                                  [chunk] * (limit // len(chunk) + 1))
    assert status == 413 and set(error) == {"message", "type", "param", "code"}, error
    filler = "ocean " * ((limit - 1000) // 6)  # a whole body, through the client: just over, then just under
    with pytest.raises(openai.APIStatusError) as e:
        _ask(server, messages=[{"role": "user", "content": filler + "x" * 2000}])
    assert e.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as e:  # an ordinary request, its prompt over the context
        _ask(server, messages=[{"role": "user", "content": filler}], max_tokens=1)
    assert "the context holds 512" in e.value.body["message"]


def test_the_bearer_scheme_is_case_insensitive_and_required(server):
    models = f"{server['base']}/v1/models"
    for header in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}"):
        assert httpx.get(models, headers={"authorization": header}).status_code == 200, header
    for header in (KEY, f"Basic {KEY}", f"Bearer{KEY}", f"bearer {KEY.upper()}", "Bearer", ""):
        r = httpx.get(models, headers={"authorization": header})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", header


@pytest.mark.parametrize("given", ["option", "environment"])
def test_an_empty_api_key_is_refused_at_startup(tmp_path, given):
    env = {k: v for k, v in os.environ.items() if k != "DRIFT_CPP_API_KEY"}
    env.update(DRIFT_CPP_CACHE=str(tmp_path / "cache"), **({"DRIFT_CPP_API_KEY": ""} if given == "environment" else {}))
    args = ["--api-key", ""] if given == "option" else []
    # Were it accepted, the server would run until the timeout kills it: a failure too.
    r = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "serve", "--profiles", str(tmp_path),
                        "--port", str(free_port()), *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "--api-key" in r.stderr and "DRIFT_CPP_API_KEY" in r.stderr and "empty" in r.stderr


def test_error_responses_name_profiles_not_the_servers_paths(server):
    profiles = server["profiles"]
    (profiles / "broken.json").write_text("{not json")
    (profiles / "erin.pairs.jsonl").write_text("not a pair\n")
    http = httpx.Client(base_url=server["base"], headers=AUTH, timeout=300)
    chat = {"model": server["model"], "messages": PROMPT, "user": "broken", "max_tokens": 1}
    pair = {"prompt": "How do I boil an egg?", "chosen": "Boil it for 8 minutes.", "rejected": "Well, eggs vary."}
    answers = {"chat": http.post("/v1/chat/completions", json=chat),
               "streamed chat": http.post("/v1/chat/completions", json={**chat, "stream": True}),
               "profile": http.get("/v1/profiles/broken"),
               "pick for given weights": http.post("/v1/preferences", json={**pair, "user": "alice"}),
               "pick beside a corrupt pairs file": http.post("/v1/preferences", json={**pair, "user": "erin"})}
    private = {str(server["root"]), str(server["root"].resolve()), os.path.expanduser("~")}
    for what, r in answers.items():
        assert r.status_code != 500 and not any(p in r.text for p in private), (what, r.text)
    for what in ("chat", "streamed chat", "profile"):
        assert answers[what].status_code == 400 and "broken.json" in answers[what].json()["error"]["message"]
    assert "alice.json" in answers["pick for given weights"].json()["error"]["message"]


def test_a_streamed_prompt_over_the_context_is_a_400_before_the_stream(server):
    long = [{"role": "user", "content": "ocean " * 600}]
    for user in ({}, {"user": "alice"}):  # plain decoding's one prompt, and a profile's several
        with pytest.raises(openai.BadRequestError) as e:  # raised by create: no stream was started
            server["client"].chat.completions.create(model=server["model"], messages=long, stream=True,
                                                     max_tokens=1, **user)
        assert e.value.body["code"] == "context_length_exceeded" and "context holds 512" in e.value.body["message"]
