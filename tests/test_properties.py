"""Property-based tests: any input either loads or is one DriftError naming the file, never anything else.

Each loader gets generated documents (mostly almost-valid ones, plus arbitrary bytes); the CLI gets
generated numeric options and must answer with exit 0/1/2 and one `error:` line, before any model work.
"""

import json
import math
import tempfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from serving import AUTH, running

from drift_cpp.fit import profile_file as pf
from drift_cpp.score.attributes import builtin_attributes, load_attributes_file
from drift_cpp.cli import main
from drift_cpp.errors import DriftError
from drift_cpp.preferences import load_pairs, write_pairs
from drift_cpp.fit.profile import Profile

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                         max_size=3), max_leaves=8)
good_texts = st.sampled_from(["Hi?", "Hello.", "Go away.", "caf\u00e9 \u2028 ok", "a\nb", "Sure!", "x" * 300])
texts = st.one_of(good_texts, good_texts, good_texts, st.sampled_from([" ", "", "\ud800", "\x00", "\x7f"]),
                  st.text(max_size=8))
raw_bytes = st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=64))  # mostly structured input
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "bot"]),
                                           "content": texts}), max_size=3)
good_messages = st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": good_texts}), min_size=1,
                         max_size=2)
good_records = st.fixed_dictionaries({"prompt": good_texts | good_messages, "chosen": good_texts,
                                      "rejected": good_texts}, optional={"id": st.sampled_from(["a", "b", "7"])})
# At most one change to otherwise valid records: a field set to anything, or a record replaced.
changes = st.one_of(st.none(), st.none(), st.tuples(
    st.integers(0, 2), st.sampled_from(["prompt", "chosen", "rejected", "id", "extra", None]),
    st.one_of(texts, messages, st.integers(0, 3), json_values)))


def changed(records: list, change) -> list:
    if change is None or not records:
        return records
    i, field, value = change
    i %= len(records)
    records[i] = value if field is None else {**records[i], field: value}
    return records


def mangle(data: bytes, how) -> bytes:
    """Sometimes a BOM, a truncation or a stray byte: the damage files really get."""
    kind, at, byte = how
    at = at % (len(data) + 1)
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "cut":
        return data[:at]
    if kind == "byte":
        return data[:at] + bytes([byte]) + data[at:]
    return data


damage = st.tuples(st.sampled_from(["none"] * 5 + ["bom", "cut", "byte"]), st.integers(0, 10**6), st.integers(0, 255))


def loads_or_names_the_file(load, path: Path):
    try:
        result = load(path)
    except DriftError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(str(path)), message
        event("refused: " + message[len(str(path)):].split(":")[-1].split("'")[0].strip()[:30])
        return None
    event("loaded")
    return result


def in_tmp(name: str, data: bytes):
    d = tempfile.mkdtemp(prefix="drift-prop-")
    path = Path(d) / name
    path.write_bytes(data)
    return path


def serialize(fmt: str, items: list) -> bytes:
    if fmt == ".jsonl":
        return "".join(json.dumps(r) + "\n" for r in items).encode("utf-8", "surrogatepass")
    if fmt == ".json":
        return json.dumps(items, indent=1).encode("utf-8", "surrogatepass")
    import csv
    import io
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "prompt", "chosen", "rejected"])
    for r in items:
        r = r if isinstance(r, dict) else {}
        w.writerow([r.get(k) if isinstance(r.get(k), str) else "" for k in ("id", "prompt", "chosen", "rejected")])
    return out.getvalue().encode("utf-8", "surrogatepass")


@SETTINGS
@given(fmt=st.sampled_from([".jsonl", ".json", ".csv"]), items=st.lists(good_records, max_size=3), change=changes,
       how=damage, raw=raw_bytes)
def test_pairs_load_or_fail_cleanly(fmt, items, change, how, raw):
    data = mangle(serialize(fmt, changed(items, change)), how)
    path = in_tmp("p" + fmt, raw if raw is not None else data)
    pairs = loads_or_names_the_file(load_pairs, path)
    if pairs is not None:  # what loads writes back and reloads unchanged
        again = path.with_name("again.jsonl")
        write_pairs(again, pairs)
        assert [(p.prompt, p.chosen, p.rejected, p.id) for p in load_pairs(again)] == \
               [(p.prompt, p.chosen, p.rejected, p.id) for p in pairs]


def valid_profile() -> dict:
    from test_profile_file import sample
    return json.loads(pf.to_json(sample()))


profile_changes = st.lists(st.tuples(st.sampled_from(pf.FIELDS + ["extra"]), json_values | st.just(None)
                                     | st.lists(st.floats(-2, 2) | st.sampled_from([1e30, 0.0]), min_size=3, max_size=3)
                                     | st.fixed_dictionaries({}, optional={"top": st.integers(-2, 9),
                                                                           "method": st.sampled_from(["qp", "bt", "x"]),
                                                                           "l2": st.floats(), "normalize": texts})),
                           max_size=2)


@SETTINGS
@given(changes=profile_changes, drop=st.none() | st.sampled_from(pf.FIELDS), how=damage,
       raw=raw_bytes)
def test_profiles_load_or_fail_cleanly(changes, drop, how, raw):
    obj = valid_profile()
    for name, value in changes:
        obj[name] = value
    if drop:
        obj.pop(drop, None)
    data = raw if raw is not None else mangle(json.dumps(obj).encode("utf-8", "surrogatepass"), how)
    path = in_tmp("me.json", data)
    loaded = loads_or_names_the_file(pf.load, path)
    if loaded is not None:  # a loaded profile saves and reloads as itself
        pf.save(path, loaded)
        assert pf.load(path) == loaded
        norm = math.sqrt(sum(x * x for x in loaded.p))
        assert norm == 0 or abs(norm - 1) < 1e-6


def valid_formula() -> dict:
    from drift_cpp.steer.formula import LLM, SLM, Formula, Term
    identity = {"name": "m.gguf", "sha256": "0" * 64}
    formula = Formula((Term(LLM, "You are an AI assistant.", 1.0, label=LLM),
                       Term(SLM, "You are concise.", 0.6, per_beta=True, label="concise"),
                       Term(SLM, "You are an AI assistant.", -0.6, per_beta=True, label="base")),
                      0.5, (("concise", 0.6),), eos=-0.5, words=(("please", 0.2),), plausibility=0.1, max_kl=0.5)
    return formula.to_dict({LLM: identity, SLM: identity})


numbers = st.floats() | st.sampled_from([0.0, 1.0, -1.0, 0.999, 1e30, 5000.0, -1e-9]) | json_values
formula_changes = st.lists(st.one_of(
    st.tuples(st.sampled_from(["beta", "eos", "plausibility", "max_kl", "words", "terms", "steering", "models",
                               "version", "extra"]), numbers),
    st.tuples(st.just("term"), st.tuples(st.integers(0, 2), st.sampled_from(["weight", "model", "system", "per_beta"]),
                                          numbers | texts))), max_size=2)


@SETTINGS
@given(changes=formula_changes, how=damage, raw=raw_bytes)
def test_formulas_load_or_fail_cleanly(changes, how, raw):
    """A saved formula loads, checked (Formula.check), and saves back as itself; or its error is one
    line naming the file."""
    from drift_cpp.steer.formula import Formula
    obj = valid_formula()
    for name, value in changes:
        if name == "term":
            i, key, v = value
            if isinstance(obj["terms"], list) and i < len(obj["terms"]) and isinstance(obj["terms"][i], dict):
                obj["terms"][i][key] = v
        else:
            obj[name] = value
    data = raw if raw is not None else mangle(json.dumps(obj).encode("utf-8", "surrogatepass"), how)
    path = in_tmp("f.json", data)
    loaded = loads_or_names_the_file(Formula.load, path)
    if loaded is not None:
        loaded.check()
        loaded.save(path, dict(obj["models"]))
        assert Formula.load(path) == loaded


def toml_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string, escapes included


attribute_entries = st.lists(st.fixed_dictionaries(
    {"id": st.sampled_from(["brief", "tone_2", "x-y"]), "prompt": good_texts}, optional={"name": good_texts}),
    max_size=3, unique_by=lambda e: e["id"])
attribute_changes = st.one_of(st.none(), st.none(), st.tuples(
    st.integers(0, 2), st.sampled_from(["id", "prompt", "name", "colour", None]),
    st.one_of(texts, st.sampled_from(["formal", "base", "a b", ""]), json_scalars)))


def toml_document(base, entries) -> str:
    lines = [f"base = {toml_string(base)}"] if base is not None else []
    for e in entries:
        lines.append("[[attributes]]")
        if isinstance(e, dict):
            lines += [f"{k} = {toml_string(v) if isinstance(v, str) else json.dumps(v)}" for k, v in e.items()]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(fmt=st.sampled_from([".toml", ".json"]), base=st.one_of(st.none(), st.none(), texts), entries=attribute_entries,
       change=attribute_changes, how=damage, raw=raw_bytes)
def test_attribute_files_load_or_fail_cleanly(fmt, base, entries, change, how, raw):
    entries = changed(entries, change)
    if fmt == ".json":
        doc = {"attributes": entries, **({"base": base} if base is not None else {})}
        text = json.dumps(doc)
    else:
        text = toml_document(base, entries)
    path = in_tmp("a" + fmt, raw if raw is not None else mangle(text.encode("utf-8", "surrogatepass"), how))
    attrs = loads_or_names_the_file(lambda p: load_attributes_file(p, builtin_attributes()), path)
    if attrs is not None:  # every attribute it adds can be rendered and sent to the model
        assert len(set(attrs.ids)) == len(attrs) >= len(builtin_attributes())
        for a in (attrs.base,) + attrs.attributes:
            assert a.prompt.strip() and a.prompt.encode("utf-8")


# --- CLI numeric options ----------------------------------------------------------------------

numbers = (st.floats() | st.sampled_from([0.0, 1.0, 0.5, 1e-6, 1e38, 1e39, 1e-300, -1.0]))
ints = st.integers(-2**40, 2**40) | st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32])
FLOAT32_MAX = 3.4028234663852886e38


def _f(x, lo, hi, lo_open=False):
    return math.isfinite(x) and abs(x) <= FLOAT32_MAX and (lo < x if lo_open else lo <= x) and x <= hi


GENERATE_RULES = {
    "--temperature": (numbers, lambda x: _f(x, 0, FLOAT32_MAX)),
    "--top-p": (numbers, lambda x: _f(x, 0, 1, lo_open=True)),
    "--min-p": (numbers, lambda x: _f(x, 0, 1)),
    "--beta": (numbers, lambda x: 1e-6 <= x <= 1e38),
    "--seed": (ints, lambda n: 0 <= n < 2**32),
    "--max-tokens": (ints, lambda n: 0 <= n <= 2**31 - 1),
    "--top-k": (ints, lambda n: 0 <= n <= 2**31 - 1),
    "--n-ctx": (ints, lambda n: 1 <= n <= 2**31 - 1),
    "--n-batch": (ints, lambda n: 1 <= n <= 2**31 - 1),
    "--top-attributes": (ints, lambda n: n >= 1),
}
APPROXIMATE_RULES = {
    "--top": (ints, lambda n: n >= 1),
    "--l2": (numbers, lambda x: math.isfinite(x) and x > 0),
    "--max-response-tokens": (ints, lambda n: n >= 0),
}


def options(rules):
    return st.fixed_dictionaries({}, optional={k: strategy for k, (strategy, _) in rules.items()})


def invoke(args):
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.exit_code, lines[0]


def as_args(chosen: dict) -> list[str]:
    return [str(a) for k, v in chosen.items() for a in (k, repr(v) if isinstance(v, float) else v)]


@SETTINGS
@given(chosen=options(GENERATE_RULES))
def test_generate_options_fail_cleanly_before_any_model(chosen):
    missing = "/nonexistent/profile.json"
    code, line = invoke(["generate", "--prompt", "Hi", "--profile", missing] + as_args(chosen))
    if all(GENERATE_RULES[k][1](v) for k, v in chosen.items()):
        assert (code, line) == (1, f"error: {missing}: file not found")
    else:
        assert missing not in line


@SETTINGS
@given(chosen=options(APPROXIMATE_RULES))
def test_approximate_options_fail_cleanly_before_any_model(chosen, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "me.json"
    missing = "/nonexistent/pairs.jsonl"
    code, line = invoke(["approximate", missing, "-o", str(out)] + as_args(chosen))
    if all(APPROXIMATE_RULES[k][1](v) for k, v in chosen.items()):
        assert (code, line) == (1, f"error: {missing}: file not found")
    else:
        assert missing not in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e-300", "0"])
def test_float_spellings_click_accepts(value):
    code, line = invoke(["generate", "--prompt", "Hi", "--beta", value])
    assert code == 2 and "beta must be positive and within" in line


# --- the server's request bodies --------------------------------------------------------------
# A real `drift-cpp serve` (--threads 1, n_ctx 256: some prompts are over it) answers any body with
# 200 or a 4xx OpenAI-shaped error, never a 500, never a hang (the client's timeout fails the test).

SERVER_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
hostile = st.one_of(json_values, texts, messages, numbers, ints,
                    st.sampled_from(["alice", "../alice", "", "a" * 65, ".x", 2**70, [], {}]))
# Valid bodies (alice has a profile, bob none), then at most one field set to anything.
good_chats = st.fixed_dictionaries(
    {"model": st.just("MODEL"), "messages": good_messages, "max_tokens": st.sampled_from([1, 2])},
    optional={"stream": st.booleans(), "user": st.sampled_from(["alice", "bob"]), "temperature": st.sampled_from([0, 0.7]),
              "top_p": st.sampled_from([0.5, 1]), "seed": st.integers(0, 2**32 - 1),
              "stop": st.lists(good_texts, max_size=2), "beta": st.sampled_from([0.5, 2])})
CHAT_FIELDS = ["model", "messages", "max_tokens", "stream", "user", "temperature", "top_p", "seed", "stop", "beta",
               "n", "max_completion_tokens", "extra"]
good_picks = st.builds(lambda user, prompt, answers, extra: {"user": user, "prompt": prompt, "chosen": answers[0],
                                                              "rejected": answers[1], **extra},
                       st.sampled_from(["carol", "dan"]), good_texts | good_messages,
                       st.lists(good_texts, min_size=2, max_size=2, unique=True),
                       st.fixed_dictionaries({}, optional={"id": st.sampled_from(["a", "b", "7"])}))
PICK_FIELDS = ["user", "prompt", "chosen", "rejected", "id", "extra"]


def one_change(fields):
    return st.one_of(st.none(), st.tuples(st.sampled_from(fields), hostile))


def changed_body(body: dict, change) -> dict:
    if change is not None:
        body[change[0]] = change[1]
    return body


@pytest.fixture(scope="module")
def server(smollm, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-properties")
    profiles = root / "profiles"
    profiles.mkdir()
    Profile.with_weights(smollm, {"concise": 0.8, "formal": -0.6}).save(profiles / "alice.json")
    with running(root, profiles, "--include", "concise", "--n-ctx", "256") as (base, _):
        with httpx.Client(base_url=base, headers={**AUTH, "content-type": "application/json"}, timeout=300) as client:
            yield client, client.get("/v1/models").json()["data"][0]["id"]


def answered_cleanly(response: httpx.Response) -> None:
    if response.status_code == 200:
        event("200")
        if response.headers["content-type"].startswith("text/event-stream"):  # no error event after the 200
            events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]" and all("error" not in json.loads(e) for e in events[:-1]), response.text
        return
    error = response.json()["error"]
    assert 400 <= response.status_code < 500 and set(error) == {"message", "type", "param", "code"}, response.text
    assert error["message"] and "\n" not in error["message"]
    event(f"{response.status_code}: {(error['param'] or error['message'])[:30]}")


def as_body(value, how) -> bytes:
    """JSON, as a client would send it (NaN included), sometimes damaged."""
    data = json.dumps(value).encode("utf-8", "surrogatepass")
    return data if how is None else mangle(data, how)


@SERVER_SETTINGS
@given(body=good_chats, change=one_change(CHAT_FIELDS), how=st.none() | damage)
def test_any_chat_body_gets_a_200_or_a_clean_4xx(server, body, change, how):
    client, model = server
    body = changed_body({**body, "model": model}, change)
    answered_cleanly(client.post("/v1/chat/completions", content=as_body(body, how)))


@SERVER_SETTINGS
@given(picks=st.lists(good_picks, min_size=1, max_size=3), as_list=st.booleans(), change=one_change(PICK_FIELDS),
       how=st.none() | damage)
def test_any_preferences_body_gets_a_200_or_a_clean_4xx(server, picks, as_list, change, how):
    client, _ = server
    changed_body(picks[0], change)
    answered_cleanly(client.post("/v1/preferences", content=as_body(picks if as_list else picks[0], how)))
