"""The user's preference pairs: a prompt, the response they chose and the one they rejected.

Files are JSONL (one object per line), CSV (columns prompt, chosen, rejected, id?), JSON (a list
of objects) or Parquet (as Hugging Face datasets ship them; read with pyarrow). Every problem is a
DriftError naming the file and line (a Parquet file's row, counted from 1).

A record's prompt is a string or a message list. Its chosen and rejected are strings, or, in TRL's
conversational preference format, message lists: each one assistant message after an explicit
prompt, or whole conversations that share everything but their last, assistant, message (TRL's
implicit prompt).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .errors import DriftError
from .fileio import MAX_DOCUMENT_BYTES, atomic_write_text, check_utf8, parse_json, read_text

ROLES = ("system", "user", "assistant")
_TEXT_FIELDS = ("prompt", "chosen", "rejected")
PAIR_SUFFIXES = (".jsonl", ".csv", ".json", ".parquet")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    id: str
    line: int
    where: str = dataclasses.field(default="", compare=False)  # names it in errors, e.g. "prefs.jsonl:17"
    # Without an id field, pairs were once named `<file name>:<line>`: profiles from then hold that id.
    legacy_id: Optional[str] = dataclasses.field(default=None, compare=False)


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read and validate preference pairs from a .jsonl, .csv, .json or .parquet file.

    A record without an id is named by its content (content_id), so one pair has one id in every
    file; a record repeated in a file gets `#2`, `#3`, ... after its id."""
    where = str(path)
    path = Path(path)
    readers = {".jsonl": _jsonl_records, ".csv": _csv_records, ".json": _json_records}
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        records = _parquet_records(path, where)
    elif suffix in readers:
        records = readers[suffix](read_text(path, where), where)
    else:
        raise DriftError(f"{where}: unsupported file type '{path.suffix}' "
                         f"(use {', '.join(PAIR_SUFFIXES[:-1])} or {PAIR_SUFFIXES[-1]})")

    pairs: list[PreferencePair] = []
    first_line: dict[str, int] = {}
    copies: dict[str, int] = {}  # records without an id, by content
    for line, record in records:
        pair = _make_pair(record, f"{where}:{line}", line)
        if "id" not in record:
            n = copies[pair.id] = copies.get(pair.id, 0) + 1
            pair = replace(pair, id=pair.id if n == 1 else f"{pair.id}#{n}", legacy_id=f"{path.name}:{line}")
        if pair.id in first_line:
            raise DriftError(
                f"{where}:{line}: duplicate id '{pair.id}' (first on line {first_line[pair.id]})"
            )
        first_line[pair.id] = line
        pairs.append(pair)
    if not pairs:
        raise DriftError(f"{where}: no preference pairs")
    return pairs


def pair_from(record: dict, at: str) -> PreferencePair:
    """One pair from a record (as in a file, at `at`); without an id, its id is a hash of its content,
    so the same feedback given twice is one pair."""
    return _make_pair(record, at, 0)


def content_id(prompt: tuple[Message, ...], chosen: str, rejected: str) -> str:
    """A pair's default id: a hash of its prompt, chosen and rejected, the same in any file or format."""
    content = json.dumps(list(_record(prompt, chosen, rejected).values()), ensure_ascii=False, sort_keys=True)
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


def _record(prompt: tuple[Message, ...], chosen: str, rejected: str) -> dict:
    """A pair as JSONL holds it: a lone user message as a string."""
    if len(prompt) == 1 and prompt[0].role == "user":
        text: Any = prompt[0].content
    else:
        text = [{"role": m.role, "content": m.content} for m in prompt]
    return {"prompt": text, "chosen": chosen, "rejected": rejected}


def write_pairs(path: str | os.PathLike, pairs: Iterable[PreferencePair]) -> None:
    """Write pairs as JSONL (atomically); ``load_pairs`` reads them back."""
    lines = [json.dumps({"id": p.id, **_record(p.prompt, p.chosen, p.rejected)}, ensure_ascii=False) + "\n"
             for p in pairs]
    atomic_write_text(path, "".join(lines))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _jsonl_records(text: str, where: str) -> Iterator[tuple[int, dict]]:
    # Split on "\n" only: str.splitlines() would also split at U+2028 and friends,
    # which may legally appear unescaped inside JSON strings.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = parse_json(line, where, first_line=n)
        if not isinstance(record, dict):
            raise DriftError(f"{where}:{n}: expected a JSON object, got {_json_type(record)}")
        yield n, record


def _json_records(text: str, where: str) -> Iterator[tuple[int, dict]]:
    items = parse_json(text, where)
    if not isinstance(items, list):
        raise DriftError(f"{where}: expected a JSON array of objects, got {_json_type(items)}")
    for line, record in zip(_array_item_lines(text), items):
        if not isinstance(record, dict):
            raise DriftError(f"{where}:{line}: expected a JSON object, got {_json_type(record)}")
        yield line, record


def _array_item_lines(text: str) -> Iterator[int]:
    """Line where each item of a (valid) top-level JSON array starts."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    i = text.index("[") + 1
    while True:
        while text[i] in ws or text[i] == ",":
            i += 1
        if text[i] == "]":
            return
        yield text.count("\n", 0, i) + 1
        _, i = decoder.raw_decode(text, i)


def _parquet_records(path: Path, where: str) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DriftError(f"{where}: reading Parquet needs pyarrow: pip install 'drift-cpp[parquet]'") from None
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise DriftError(f"{where}: more than the {MAX_DOCUMENT_BYTES} bytes drift-cpp reads")
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DriftError(f"{where}: file not found") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DriftError(f"{where}: not a readable Parquet file: {_one_line(e)}") from None
    for row, record in enumerate(table.to_pylist(), start=1):
        yield row, record


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _csv_records(text: str, where: str) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for col in _TEXT_FIELDS:
            if col not in header:
                raise DriftError(f"{where}:{reader.line_num}: missing column '{col}'")
        start = reader.line_num + 1
        for row in reader:
            # A quoted cell may span lines; report the line the record starts on.
            line, start = start, reader.line_num + 1
            if not row:  # blank line
                continue
            if len(row) != len(header):
                raise DriftError(f"{where}:{line}: expected {len(header)} columns, got {len(row)}")
            record = dict(zip(header, row))
            if record.get("id", "") == "":
                record.pop("id", None)
            yield line, record
    except csv.Error as e:
        raise DriftError(f"{where}:{reader.line_num}: invalid CSV: {e}") from None


def _make_pair(record: dict, at: str, line: int) -> PreferencePair:
    if isinstance(record.get("chosen"), list) or isinstance(record.get("rejected"), list):
        record = _from_conversational(record, at)
    for field in _TEXT_FIELDS:
        if field not in record:
            raise DriftError(f"{at}: missing field '{field}'")
    for field in ("chosen", "rejected"):
        _check_text(record[field], field, at)

    prompt = record["prompt"]
    if isinstance(prompt, list):
        messages = _parse_messages(prompt, at)
    else:
        _check_text(prompt, "prompt", at)
        messages = (Message("user", prompt),)

    if record["chosen"].strip() == record["rejected"].strip():
        raise DriftError(f"{at}: identical 'chosen' and 'rejected'")

    pair_id = record["id"] if "id" in record else content_id(messages, record["chosen"], record["rejected"])
    if isinstance(pair_id, int) and not isinstance(pair_id, bool):
        pair_id = str(pair_id)
    if not isinstance(pair_id, str):
        raise DriftError(f"{at}: field 'id' must be a string, got {_json_type(pair_id)}")
    if not pair_id.strip():
        raise DriftError(f"{at}: field 'id' is empty")
    return PreferencePair(messages, record["chosen"], record["rejected"], pair_id, line, at)


def _from_conversational(record: dict, at: str) -> dict:
    """TRL's conversational format as a plain record: the prompt's messages, and the two answers' texts."""
    answers = {}
    for field in ("chosen", "rejected"):
        value = record.get(field)
        if value is None:
            raise DriftError(f"{at}: missing field '{field}'")
        if not isinstance(value, list):
            raise DriftError(f"{at}: field '{field}' must be a message list like the other answer, "
                             f"got {_json_type(value)}")
        if not value:
            raise DriftError(f"{at}: field '{field}' is an empty message list")
        last = value[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise DriftError(f"{at}: field '{field}' must end with an assistant message")
        answers[field] = value
    out = {**record, "chosen": answers["chosen"][-1].get("content"), "rejected": answers["rejected"][-1].get("content")}
    if "prompt" in record:  # explicit prompt: each answer is the one assistant message
        for field, value in answers.items():
            if len(value) != 1:
                raise DriftError(f"{at}: field '{field}' must be one assistant message when 'prompt' is given, "
                                 f"got {len(value)} messages")
    else:  # implicit prompt: the conversation both answers continue
        prefix = answers["chosen"][:-1]
        if prefix != answers["rejected"][:-1]:
            raise DriftError(f"{at}: fields 'chosen' and 'rejected' must share every message but their last "
                             "(TRL's implicit prompt)")
        if not prefix:
            raise DriftError(f"{at}: missing field 'prompt' (and 'chosen' holds no prompt messages)")
        out["prompt"] = prefix
    return out


def _check_text(value: Any, field: str, at: str) -> None:
    if not isinstance(value, str):
        raise DriftError(f"{at}: field '{field}' must be a string, got {_json_type(value)}")
    if not value.strip():
        raise DriftError(f"{at}: field '{field}' is empty")
    check_utf8(value, f"{at}: field '{field}'")


def _parse_messages(items: list, at: str) -> tuple[Message, ...]:
    if not items:
        raise DriftError(f"{at}: field 'prompt' is an empty message list")
    messages = []
    for i, item in enumerate(items):
        mat = f"{at}: prompt[{i}]"
        if not isinstance(item, dict):
            raise DriftError(f"{mat}: expected a message object, got {_json_type(item)}")
        for field in ("role", "content"):
            if field not in item:
                raise DriftError(f"{mat}: missing field '{field}'")
        role = item["role"]
        if role not in ROLES:
            raise DriftError(f"{mat}: unknown role {json.dumps(role)} (expected system, user or assistant)")
        if role == "system" and i > 0:
            raise DriftError(f"{mat}: a 'system' message may only come first")
        _check_text(item["content"], "content", mat)
        messages.append(Message(role, item["content"]))
    if messages[-1].role != "user":
        raise DriftError(f"{at}: the last prompt message must have role 'user'")
    return tuple(messages)
