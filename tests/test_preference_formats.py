"""Preference pairs in the ecosystem's formats: TRL's conversational records, and Parquet (pyarrow)."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift_cpp.errors import DriftError
from drift_cpp.preferences import Message, load_pairs, pair_from

PLAIN = {"id": "a", "prompt": "How do I boil an egg?", "chosen": "8 minutes.", "rejected": "It depends on many things."}
EXPLICIT = {"id": "a", "prompt": [{"role": "user", "content": "How do I boil an egg?"}],
            "chosen": [{"role": "assistant", "content": "8 minutes."}],
            "rejected": [{"role": "assistant", "content": "It depends on many things."}]}
IMPLICIT = {"id": "a",
            "chosen": [{"role": "user", "content": "How do I boil an egg?"}, {"role": "assistant", "content": "8 minutes."}],
            "rejected": [{"role": "user", "content": "How do I boil an egg?"},
                         {"role": "assistant", "content": "It depends on many things."}]}


def _jsonl(tmp_path, records, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _without_line(pairs):
    return [(p.prompt, p.chosen, p.rejected, p.id) for p in pairs]


@pytest.mark.parametrize("record", [EXPLICIT, IMPLICIT])
def test_trl_conversational_records_are_the_same_pairs_as_plain_ones(tmp_path, record):
    expected = load_pairs(_jsonl(tmp_path, [PLAIN], "plain.jsonl"))
    assert _without_line(load_pairs(_jsonl(tmp_path, [record]))) == _without_line(expected)


def test_an_implicit_prompt_keeps_the_whole_shared_conversation(tmp_path):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Egg?"}]
    record = {"chosen": turns + [{"role": "assistant", "content": "8 min."}],
              "rejected": turns + [{"role": "assistant", "content": "Many ways."}]}
    (pair,) = load_pairs(_jsonl(tmp_path, [record]))
    assert pair.prompt == tuple(Message(t["role"], t["content"]) for t in turns)
    assert (pair.chosen, pair.rejected) == ("8 min.", "Many ways.")


@pytest.mark.parametrize("record, message", [
    ({**EXPLICIT, "rejected": "text"}, "p.jsonl:2: field 'rejected' must be a message list like the other answer"),
    ({**IMPLICIT, "rejected": IMPLICIT["rejected"][:1]}, "p.jsonl:2: field 'rejected' must end with an assistant"),
    ({**IMPLICIT, "rejected": [{"role": "user", "content": "Other?"}, IMPLICIT["rejected"][1]]},
     "p.jsonl:2: fields 'chosen' and 'rejected' must share every message but their last"),
    ({**EXPLICIT, "chosen": IMPLICIT["chosen"]}, "p.jsonl:2: field 'chosen' must be one assistant message"),
    ({**IMPLICIT, "chosen": IMPLICIT["chosen"][1:], "rejected": IMPLICIT["rejected"][1:]},
     "p.jsonl:2: missing field 'prompt'"),
    ({**EXPLICIT, "chosen": [{"role": "assistant", "content": 3}]}, "p.jsonl:2: field 'chosen' must be a string"),
])
def test_a_bad_conversational_record_is_one_error_naming_file_line_and_field(tmp_path, record, message):
    with pytest.raises(DriftError, match="/" + re.escape(message)):
        load_pairs(_jsonl(tmp_path, [PLAIN | {"id": "b"}, record]))


def test_parquet_as_datasets_ship_it_plain_or_conversational(tmp_path):
    expected = _without_line(load_pairs(_jsonl(tmp_path, [PLAIN, {**PLAIN, "id": "b", "chosen": "Ten."}])))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([PLAIN, {**PLAIN, "id": "b", "chosen": "Ten."}]), plain)
    assert _without_line(load_pairs(plain)) == expected
    conversational = tmp_path / "trl.parquet"
    second = {**EXPLICIT, "id": "b", "chosen": [{"role": "assistant", "content": "Ten."}]}
    pq.write_table(pa.Table.from_pylist([EXPLICIT, second]), conversational)
    assert _without_line(load_pairs(conversational)) == expected


def test_bad_parquet_is_one_error(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([PLAIN, {**PLAIN, "id": "b", "chosen": None}]), path)
    with pytest.raises(DriftError, match=r"^.*p\.parquet:2: field 'chosen' must be a string, got null$"):
        load_pairs(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DriftError, match=r"p\.parquet: not a readable Parquet file: \S"):
        load_pairs(path)
    with pytest.raises(DriftError, match="file not found"):
        load_pairs(tmp_path / "missing.parquet")


def test_feedback_without_an_id_is_named_by_its_content():
    a = pair_from({"prompt": "q", "chosen": "x", "rejected": "y"}, "body")
    assert a.id == pair_from({"prompt": "q", "chosen": "x", "rejected": "y"}, "body").id
    assert a.id != pair_from({"prompt": "q", "chosen": "y", "rejected": "x"}, "body").id
    with pytest.raises(DriftError, match="^body: field 'chosen' is empty"):
        pair_from({"prompt": "q", "chosen": " ", "rejected": "y"}, "body")
