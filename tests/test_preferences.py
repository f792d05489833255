import json
import os

import pytest

from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from drift_cpp.preferences import Message, PreferencePair, content_id, load_pairs, pair_from, write_pairs

DEMO = os.path.join(os.path.dirname(__file__), "..", "python", "drift_cpp", "data", "demo_pairs.jsonl")
GOOD = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def jsonl(*records):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def error(tmp_path, name, content):
    """The one-line error for a file, with the path exactly as the user gave it."""
    p = write(tmp_path, name, content)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(DriftError) as e:
            load_pairs(name)
    finally:
        os.chdir(cwd)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_valid_jsonl(tmp_path):
    p = write(tmp_path, "prefs.jsonl", jsonl(GOOD, "", "   ", dict(GOOD, id="x", chosen="Hey.")))
    pairs = load_pairs(p)
    assert pairs == [
        PreferencePair((Message("user", "Hi?"),), "Hello.", "Go away.", content_id((Message("user", "Hi?"),),
                                                                                  "Hello.", "Go away."), 1),
        PreferencePair((Message("user", "Hi?"),), "Hey.", "Go away.", "x", 4),
    ]
    assert len({hash(x) for x in pairs}) == 2
    assert [(x.where, x.legacy_id) for x in pairs] == [(f"{p}:1", "prefs.jsonl:1"), (f"{p}:4", None)]


def test_ids_are_the_content_in_any_file_and_format(tmp_path):
    # Issue 20: ids were `<file name>:<line>`, so b/prefs.jsonl's first pair had a/prefs.jsonl's id.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    other = dict(GOOD, chosen="Hey there.")
    (a,) = load_pairs(write(tmp_path, "a/prefs.jsonl", jsonl(GOOD)))
    (b,) = load_pairs(write(tmp_path, "b/prefs.jsonl", jsonl(other)))
    assert a.id != b.id and a.legacy_id == b.legacy_id == "prefs.jsonl:1"
    # The same pair in another place, format or spelling (a one-message prompt list) has the same id.
    moved = load_pairs(write(tmp_path, "c.csv", "prompt,chosen,rejected\nx,y,z\nHi?,Hello.,Go away.\n"))[1]
    listed = load_pairs(write(tmp_path, "d.json", json.dumps([other, dict(GOOD, prompt=[{"role": "user",
                                                                                            "content": "Hi?"}])])))[1]
    assert moved.id == listed.id == a.id == pair_from(GOOD, "body").id
    # A record repeated in one file stays a pair of its own, its id numbered; an explicit id is kept.
    ids = [p.id for p in load_pairs(write(tmp_path, "e.jsonl", jsonl(GOOD, other, GOOD, dict(GOOD, id="mine"))))]
    assert ids == [a.id, b.id, f"{a.id}#2", "mine"]
    # write_pairs records the ids: reading back gives the same pairs, ids included.
    pairs = load_pairs(tmp_path / "e.jsonl")
    write_pairs(tmp_path / "f.jsonl", pairs)
    assert load_pairs(tmp_path / "f.jsonl") == pairs


def test_multi_turn(tmp_path):
    msgs = [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    (pair,) = load_pairs(write(tmp_path, "p.jsonl", jsonl(dict(GOOD, prompt=msgs))))
    assert pair.prompt == tuple(Message(m["role"], m["content"]) for m in msgs)


def test_valid_csv_with_multiline_cell(tmp_path):
    text = 'id,prompt,chosen,rejected\n,"Line one\nline two",Yes.,No.\n\nq2,Why?,Because.,"Long,\nwinded."\n'
    pairs = load_pairs(write(tmp_path, "p.csv", text))
    assert [(p.legacy_id, p.line) for p in pairs] == [("p.csv:2", 2), (None, 5)] and pairs[1].id == "q2"
    assert pairs[0].prompt == (Message("user", "Line one\nline two"),)
    assert pairs[1].rejected == "Long,\nwinded."


def test_csv_with_bom_and_no_id_column(tmp_path):
    (pair,) = load_pairs(write(tmp_path, "p.csv", b"\xef\xbb\xbfprompt,chosen,rejected\r\nQ,A,B\r\n"))
    assert (pair.legacy_id, pair.chosen, pair.rejected) == ("p.csv:2", "A", "B")


def test_valid_json_list(tmp_path):
    text = '[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n\n  {"prompt": "d",\n   "chosen": "e", "rejected": "f", "id": 7}\n]\n'
    pairs = load_pairs(write(tmp_path, "p.json", text))
    assert [(p.legacy_id or p.id, p.line) for p in pairs] == [("p.json:2", 2), ("7", 4)]


def test_write_round_trip(tmp_path):
    pairs = load_pairs(DEMO) + [
        PreferencePair((Message("system", "S"), Message("user", "U ü\u2028x")), "c", "r", "multi", 1)
    ]
    out = tmp_path / "out.jsonl"
    out.write_text("old")
    write_pairs(out, pairs)
    back = load_pairs(out)
    assert [(p.prompt, p.chosen, p.rejected, p.id) for p in back] == [
        (p.prompt, p.chosen, p.rejected, p.id) for p in pairs
    ]
    assert os.listdir(tmp_path) == ["out.jsonl"]  # no temp file left behind


def test_atomic_write_cleans_up_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "bad \ud800")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_demo_pairs():
    pairs = load_pairs(DEMO)
    assert len(pairs) >= 10
    assert [p.id for p in pairs][:2] == ["demo-01", "demo-02"]
    for p in pairs:
        assert len(p.chosen) < len(p.rejected) / 2  # the persona wants short answers


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "prefs.jsonl: no preference pairs"),
        ("\n  \n", "prefs.jsonl: no preference pairs"),
        (jsonl(GOOD, '{"prompt": "x",'), "prefs.jsonl:2: invalid JSON: Expecting property name enclosed in double quotes (column 16)"),
        (jsonl(GOOD, "[1, 2]"), "prefs.jsonl:2: expected a JSON object, got array"),
        (jsonl(GOOD, GOOD, {"prompt": "x", "rejected": "y"}), "prefs.jsonl:3: missing field 'chosen'"),
        (jsonl({"chosen": "x", "rejected": "y"}), "prefs.jsonl:1: missing field 'prompt'"),
        (jsonl(dict(GOOD, chosen=3)), "prefs.jsonl:1: field 'chosen' must be a string, got number"),
        (jsonl(dict(GOOD, prompt=None)), "prefs.jsonl:1: field 'prompt' must be a string, got null"),
        (jsonl(dict(GOOD, rejected=" \n\t")), "prefs.jsonl:1: field 'rejected' is empty"),
        (jsonl(dict(GOOD, prompt="  ")), "prefs.jsonl:1: field 'prompt' is empty"),
        (jsonl(dict(GOOD, rejected="Hello. ")), "prefs.jsonl:1: identical 'chosen' and 'rejected'"),
        (jsonl(dict(GOOD, id="a"), GOOD, dict(GOOD, id="a")), "prefs.jsonl:3: duplicate id 'a' (first on line 1)"),
        (jsonl(dict(GOOD, id=["a"])), "prefs.jsonl:1: field 'id' must be a string, got array"),
        (jsonl(dict(GOOD, id="")), "prefs.jsonl:1: field 'id' is empty"),
        (jsonl(GOOD).encode() + b'{"prompt": "caf\xe9"}\n', "prefs.jsonl:2: not valid UTF-8"),
        (jsonl(dict(GOOD, prompt=[])), "prefs.jsonl:1: field 'prompt' is an empty message list"),
        (jsonl(dict(GOOD, prompt=["hi"])), "prefs.jsonl:1: prompt[0]: expected a message object, got string"),
        (jsonl(dict(GOOD, prompt=[{"role": "bot", "content": "x"}])), 'prefs.jsonl:1: prompt[0]: unknown role "bot" (expected system, user or assistant)'),
        (jsonl(dict(GOOD, prompt=[{"role": "user"}])), "prefs.jsonl:1: prompt[0]: missing field 'content'"),
        (jsonl(dict(GOOD, prompt=[{"role": "user", "content": ""}])), "prefs.jsonl:1: prompt[0]: field 'content' is empty"),
        (jsonl(dict(GOOD, prompt=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])), "prefs.jsonl:1: the last prompt message must have role 'user'"),
        (jsonl(dict(GOOD, prompt=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}])), "prefs.jsonl:1: prompt[1]: a 'system' message may only come first"),
    ],
)
def test_jsonl_errors(tmp_path, content, expected):
    assert error(tmp_path, "prefs.jsonl", content) == expected


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "prefs.csv: no preference pairs"),
        ("prompt,chosen,rejected\n", "prefs.csv: no preference pairs"),
        ("prompt,chosen\nq,a\n", "prefs.csv:1: missing column 'rejected'"),
        ("prompt,chosen,rejected\nq,a,b\nq,a\n", "prefs.csv:3: expected 3 columns, got 2"),
        ('prompt,chosen,rejected\n"multi\nline",a,b\nq,a,\n', "prefs.csv:4: field 'rejected' is empty"),
        ("prompt,chosen,rejected\nq,same,same\n", "prefs.csv:2: identical 'chosen' and 'rejected'"),
        ("id,prompt,chosen,rejected\nx,q,a,b\nx,q,a,c\n", "prefs.csv:3: duplicate id 'x' (first on line 2)"),
        (b"prompt,chosen,rejected\nq,a,b\nq,\xff,b\n", "prefs.csv:3: not valid UTF-8"),
    ],
)
def test_csv_errors(tmp_path, content, expected):
    assert error(tmp_path, "prefs.csv", content) == expected


def test_json_errors(tmp_path):
    assert error(tmp_path, "p.json", '{"a": 1}') == "p.json: expected a JSON array of objects, got object"
    assert error(tmp_path, "p.json", "[\n1\n]") == "p.json:2: expected a JSON object, got number"
    assert error(tmp_path, "p.json", '[\n{"prompt": "a", "chosen": "b", "rejected": "c"},\n]') == (
        "p.json:3: invalid JSON: Expecting value (column 1)"
    )
    assert error(tmp_path, "p.json", "[]") == "p.json: no preference pairs"


def test_bad_suffix_and_missing_file(tmp_path):
    assert error(tmp_path, "prefs.txt", "x") == "prefs.txt: unsupported file type '.txt' (use .jsonl, .csv, .json or .parquet)"
    with pytest.raises(DriftError, match="nope.jsonl: file not found$"):
        load_pairs(tmp_path / "nope.jsonl")


def test_loading_never_writes(tmp_path):
    p = write(tmp_path, "prefs.jsonl", jsonl(GOOD))
    before = p.stat().st_mtime_ns
    load_pairs(p)
    assert os.listdir(tmp_path) == ["prefs.jsonl"] and p.stat().st_mtime_ns == before
