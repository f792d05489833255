"""The user's preference pairs: a prompt, the response they chose and the one they rejected.

Files are JSONL (one object per line), CSV (columns prompt, chosen, rejected, id?) or
JSON (a list of objects). Every problem is a DriftError naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DriftError
from .fileio import atomic_write_text, check_utf8, parse_json, read_text

ROLES = ("system", "user", "assistant")
_TEXT_FIELDS = ("prompt", "chosen", "rejected")


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


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read and validate preference pairs from a .jsonl, .csv or .json file."""
    where = str(path)
    path = Path(path)
    readers = {".jsonl": _jsonl_records, ".csv": _csv_records, ".json": _json_records}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DriftError(f"{where}: unsupported file type '{path.suffix}' (use .jsonl, .csv or .json)")
    text = read_text(path, where)

    pairs: list[PreferencePair] = []
    first_line: dict[str, int] = {}
    for line, record in reader(text, where):
        pair = _make_pair(record, f"{where}:{line}", line, default_id=f"{path.name}:{line}")
        if pair.id in first_line:
            raise DriftError(
                f"{where}:{line}: duplicate id '{pair.id}' (first on line {first_line[pair.id]})"
            )
        first_line[pair.id] = line
        pairs.append(pair)
    if not pairs:
        raise DriftError(f"{where}: no preference pairs")
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable[PreferencePair]) -> None:
    """Write pairs as JSONL (atomically); ``load_pairs`` reads them back."""
    lines = []
    for p in pairs:
        if len(p.prompt) == 1 and p.prompt[0].role == "user":
            prompt: Any = p.prompt[0].content
        else:
            prompt = [{"role": m.role, "content": m.content} for m in p.prompt]
        record = {"id": p.id, "prompt": prompt, "chosen": p.chosen, "rejected": p.rejected}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
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


def _make_pair(record: dict, at: str, line: int, default_id: str) -> PreferencePair:
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

    pair_id = record.get("id", default_id)
    if isinstance(pair_id, int) and not isinstance(pair_id, bool):
        pair_id = str(pair_id)
    if not isinstance(pair_id, str):
        raise DriftError(f"{at}: field 'id' must be a string, got {_json_type(pair_id)}")
    if not pair_id.strip():
        raise DriftError(f"{at}: field 'id' is empty")
    return PreferencePair(messages, record["chosen"], record["rejected"], pair_id, line)


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
