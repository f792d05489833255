"""Attributes: the differential system prompts Drift scores responses with (paper, Table 6)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Mapping

from ..errors import DriftError
from ..fileio import check_utf8, read_document

BASE_ID = "base"
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Attribute:
    id: str
    name: str
    prompt: str


@dataclass(frozen=True)
class AttributeSet:
    """The base prompt plus the attributes, in a fixed order (the order of the weights)."""

    base: Attribute
    attributes: tuple[Attribute, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        seen = {self.base.id}
        for a in self.attributes:
            if a.id in seen:
                raise DriftError(f"duplicate attribute id '{a.id}'")
            seen.add(a.id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.attributes)

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(a.prompt for a in self.attributes)

    def __len__(self) -> int:
        return len(self.attributes)

    def get(self, id: str) -> Attribute:
        for a in self.attributes:
            if a.id == id:
                return a
        raise DriftError(f"unknown attribute id: {id} (valid: {', '.join(self.ids)})")

    def select(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> AttributeSet:
        """Keep the ``include`` ids (all if None), minus the ``exclude`` ids; order is kept."""
        include = None if include is None else list(include)
        exclude = [] if exclude is None else list(exclude)
        unknown = [i for i in (include or []) + exclude if i not in self.ids]
        if unknown:
            raise DriftError(
                f"unknown attribute id(s): {', '.join(dict.fromkeys(unknown))} "
                f"(valid: {', '.join(self.ids)})"
            )
        kept = tuple(
            a
            for a in self.attributes
            if (include is None or a.id in include) and a.id not in exclude
        )
        if not kept:
            raise DriftError("no attributes left after selection")
        return AttributeSet(self.base, kept)

    def extend(self, other: Iterable[Attribute]) -> AttributeSet:
        """Append attributes; re-adding an identical one is a no-op, a changed prompt is an error."""
        attrs = list(self.attributes)
        by_id = {a.id: a for a in attrs}
        for a in other:
            old = by_id.get(a.id)
            if a.id == self.base.id:
                raise DriftError(f"attribute id '{a.id}' is reserved for the base prompt")
            if old is None:
                attrs.append(a)
                by_id[a.id] = a
            elif old.prompt != a.prompt:
                raise DriftError(f"attribute '{a.id}' is already defined with a different prompt")
        return AttributeSet(self.base, tuple(attrs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": _attr_dict(self.base),
            "attributes": [_attr_dict(a) for a in self.attributes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeSet:
        """Inverse of ``to_dict``; raises DriftError on a malformed dict."""
        try:
            base, attrs = data["base"], data["attributes"]
        except (KeyError, TypeError) as e:
            raise DriftError(f"invalid attribute set: {e}") from None
        return cls(parse_entry(base, "base"), tuple(parse_entry(a, f"attributes[{i}]") for i, a in enumerate(attrs)))


def _attr_dict(a: Attribute) -> dict[str, str]:
    return {"id": a.id, "name": a.name, "prompt": a.prompt}


def builtin_attributes() -> AttributeSet:
    """The paper's base prompt and its 41 attributes."""
    text = resources.files("drift_cpp").joinpath("data/attributes.json").read_text("utf-8")
    return AttributeSet.from_dict(json.loads(text))


def load_attributes_file(path: str | os.PathLike, into: AttributeSet) -> AttributeSet:
    """Add the attributes of a TOML or JSON file to ``into``.

    Shape: ``attributes = [{id, prompt, name?}, ...]`` and an optional top-level
    ``base`` prompt string, which replaces the base prompt of the result.
    """
    where = str(path)
    data = read_document(path, where)
    if not isinstance(data, dict):
        raise DriftError(f"{where}: expected a table/object at the top level")
    unknown = sorted(set(data) - {"base", "attributes"})
    if unknown:
        raise DriftError(f"{where}: unknown field '{unknown[0]}'")

    base = into.base
    if "base" in data:
        if not isinstance(data["base"], str):
            raise DriftError(f"{where}: field 'base' must be a string")
        if not data["base"].strip():
            raise DriftError(f"{where}: field 'base' is empty")
        check_utf8(data["base"], f"{where}: field 'base'")
        base = Attribute(BASE_ID, "Base", data["base"])

    entries = data.get("attributes")
    if entries is None:
        raise DriftError(f"{where}: missing field 'attributes'")
    if not isinstance(entries, list):
        raise DriftError(f"{where}: field 'attributes' must be a list")
    if not entries:
        raise DriftError(f"{where}: no attributes")

    attrs: list[Attribute] = []
    first_index: dict[str, int] = {}
    for i, entry in enumerate(entries):
        at = f"{where}: attributes[{i}]"
        attr = parse_entry(entry, at)
        if attr.id == BASE_ID:
            raise DriftError(f"{at}: id '{BASE_ID}' is reserved for the base prompt")
        if attr.id in into.ids and into.get(attr.id).prompt != attr.prompt:
            raise DriftError(f"{at}: id '{attr.id}' is already defined with a different prompt")
        if attr.id in first_index:
            raise DriftError(
                f"{at}: duplicate id '{attr.id}' (also attributes[{first_index[attr.id]}])"
            )
        first_index[attr.id] = i
        attrs.append(attr)

    return AttributeSet(base, into.attributes).extend(attrs)


def parse_entry(entry: Any, at: str) -> Attribute:
    """The one check of an attribute entry {"id", "name" (optional), "prompt"}: in attribute files,
    in profiles and in the built-in library alike. Errors name `at`."""
    if not isinstance(entry, dict):
        raise DriftError(f"{at}: expected a table/object")
    unknown = sorted(set(entry) - {"id", "name", "prompt"})
    if unknown:
        raise DriftError(f"{at}: unknown field '{unknown[0]}'")
    for field in ("id", "prompt"):
        if field not in entry:
            raise DriftError(f"{at}: missing field '{field}'")
    for field in ("id", "name", "prompt"):
        if field in entry:
            if not isinstance(entry[field], str):
                raise DriftError(f"{at}: field '{field}' must be a string")
            if not entry[field].strip():
                raise DriftError(f"{at}: field '{field}' is empty")
            check_utf8(entry[field], f"{at}: field '{field}'")
    if not _ID_RE.match(entry["id"]):
        raise DriftError(f"{at}: id {entry['id']!r} may only use letters, digits, '_' and '-'")
    return Attribute(entry["id"], entry.get("name", entry["id"]), entry["prompt"])
