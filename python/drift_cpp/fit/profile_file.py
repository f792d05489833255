"""The on-disk JSON format of a Drift profile (the fitted user preference).

Only the file format lives here: ProfileData, to_json / save / load with strict
validation. Fitting and updating are done by the Profile class elsewhere.

Every load (and save) problem is a DriftError with one line: "<path>: <what is wrong>",
naming the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from ..score.attributes import parse_entry
from .choice import FAMILIES
from .options import FitOptions
from ..errors import DriftError
from ..fileio import atomic_write_text, parse_json, read_text
from ..params import is_number

SCHEMA_VERSION = 2  # version 1: any older shape, read through migrate()


@dataclass
class ProfileData:
    """One profile as stored in JSON; the fields appear in the file in this order."""

    schema_version: int
    model: dict  # identity of the model the features were computed with (filled by the caller)
    base: dict  # base prompt s_0: {"id", "name", "prompt"}
    attributes: list  # attribute prompts s_i: [{"id", "name", "prompt"}, ...]
    sums: list  # per-attribute sum over pairs of (W - L), same order as attributes
    n_pairs: int
    p: list  # unit-norm attribute weights, same order as attributes
    selected: list  # attribute ids used for decoding, by |p| descending
    decode_exclude: list  # attribute ids never used for decoding
    options: dict  # fitting options: normalize, method, top, ...
    pair_ids: list  # ids of the pairs already included (updates skip them)
    created_at: str  # ISO 8601, UTC
    updated_at: str  # ISO 8601, UTC
    # Per-pair rows {"rows": [{"id": str, "w": [k floats], "l": [k floats]}, ...]}: needed by
    # the logistic / bt methods, which cannot be updated from the sums alone. A row may hold
    # "bow": [{word: count} of chosen, of rejected], read by the length and lexical families, and
    # "group": a hash of the pair's prompt, by which the family choice cross-validates. In a screened
    # profile an entry of "w" / "l" is null where the pair was not scored under that attribute.
    features: Optional[dict] = None
    # The model family chosen for this user (choice.py): {"family": [...], "reason", "n_pairs",
    # "cv": {name: {"accuracy", "se"}}, "model": {"attributes", "length", "words", "word_norm"}}.
    # Absent in older profiles, which decode with the attributes only.
    choice: Optional[dict] = None
    # Attribute screening (screening.py): {"options": ScreenOptions fields, "kept": [ids the next
    # pairs are scored under, besides a random few]}; absent when every pair was scored under every attribute.
    screen: Optional[dict] = None
    # What scoring the pairs took, summed over the fit and its updates:
    # {"tokens_evaluated", "seconds", "items_scored", "items_cached"}.
    cost: Optional[dict] = None


# Fields written only when set, so a profile without them reads as it did before they existed.
OPTIONAL_FIELDS = ("choice", "screen", "cost")


FIELDS = [f.name for f in dataclasses.fields(ProfileData)]


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string, e.g. 2025-01-31T12:00:00Z."""
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_plain(obj):
    """json.dumps default hook: numpy scalars and arrays become Python numbers and lists."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def to_json(data: ProfileData) -> str:
    """The profile as JSON text: indent 2, keys in field order, NaN/inf refused."""
    obj = {name: getattr(data, name) for name in FIELDS
           if not (name in OPTIONAL_FIELDS and getattr(data, name) is None)}
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_to_plain) + "\n"


def save(path, data: ProfileData) -> None:
    """Validate `data` exactly as load() would, then write it atomically to `path`."""
    where = os.fspath(path)
    try:
        text = to_json(data)
    except (TypeError, ValueError) as e:
        raise DriftError(f"{where}: cannot serialize profile: {e}") from None
    _validate(json.loads(text), where)
    atomic_write_text(path, text)


def load(path) -> ProfileData:
    """Read a profile file of any version, migrated to this one, and validate it; any problem is a
    one-line DriftError. Saving writes this version, so an old file is upgraded by its next save."""
    where = os.fspath(path)
    return _validate(migrate(parse_json(read_text(path, where), where)), where)


# --- older versions -------------------------------------------------------------------

# What a version-1 file meant by a fitting option it did not record. l2 came with the regressions, and
# before it profiles were fitted at 1; max_response_tokens came with truncation, and before it whole
# responses were scored (0); family came with the family choice, "auto" from the start. top, normalize and
# method were always written; absent, they read as the defaults of the last version 1. Fixed here, not taken
# from params, as an old file means what it meant when it was written, whatever today's defaults.
V1_OPTIONS = {"top": 7, "normalize": "sum", "method": "bt", "l2": 1.0, "family": "auto", "max_response_tokens": 0}


def migrate(obj: Any) -> Any:
    """An older profile document (schema version 1, in any of its shapes) as a current one; anything else
    is returned as it is, for validation to judge. The one place older shapes are known: after it, a
    document has every fitting option and a choice has its shares (written since the joint model; {}
    before it, where the families' shares of the margins were not recorded)."""
    version = obj.get("schema_version") if isinstance(obj, dict) else None
    if not (_is_int(version) and 1 <= version < SCHEMA_VERSION):
        return obj
    obj = {**obj, "schema_version": SCHEMA_VERSION}
    if isinstance(obj.get("options"), dict):
        obj["options"] = {**V1_OPTIONS, **obj["options"]}
    if isinstance(obj.get("choice"), dict):
        obj["choice"] = {"shares": {}, **obj["choice"]}
    return obj


# --- validation -----------------------------------------------------------------------


class _Invalid(Exception):
    pass


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _expect(obj: dict, name: str, kind: type, what: str):
    if name not in obj:
        raise _Invalid(f"missing field '{name}'")
    value = obj[name]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise _Invalid(f"field '{name}' must be {what}, got {type(value).__name__}")
    return value


def _numbers(values: list, name: str, length: int, nullable: bool = False) -> list:
    if len(values) != length:
        raise _Invalid(f"field '{name}' has {len(values)} entries but 'attributes' has {length}")
    for i, x in enumerate(values):
        if not (is_number(x) or (nullable and x is None)):
            raise _Invalid(f"field '{name}[{i}]' must be a finite number, got {x!r}")
    return [None if x is None else float(x) for x in values]


# p is v/|v| (or a regression's coefficients at unit norm), or all zero when v = 0.
UNIT_NORM_TOL = 1e-6


def _unit_vector(p: list) -> list:
    for i, x in enumerate(p):
        if abs(x) > 1 + UNIT_NORM_TOL:
            raise _Invalid(f"field 'p[{i}]' is {x!r}; weights of a unit vector lie in [-1, 1]")
    norm = math.sqrt(math.fsum(x * x for x in p))
    if norm != 0 and abs(norm - 1) > UNIT_NORM_TOL:
        raise _Invalid(f"field 'p' has l2 norm {norm:.6g}; it must be 1 (or all zero)")
    return p


def _prompt_entry(entry, name: str) -> dict:
    try:  # attributes' own check, so that profiles and attribute files agree on what an entry is
        parse_entry(entry, f"field '{name}'")
    except DriftError as e:
        raise _Invalid(str(e)) from None
    return entry


def _id_list(values: list, name: str, known: set) -> list:
    seen = set()
    for i, x in enumerate(values):
        if not isinstance(x, str):
            raise _Invalid(f"field '{name}[{i}]' must be a string, got {type(x).__name__}")
        if known is not None and x not in known:
            raise _Invalid(f"field '{name}' names unknown attribute '{x}'")
        if x in seen:
            raise _Invalid(f"field '{name}' lists '{x}' twice")
        seen.add(x)
    return values


# The fitting options a profile may record, with a check and its wording for each.
_OPTIONS = {"top": (_is_int, "an integer"), "normalize": (lambda x: isinstance(x, str), "a string"),
            "method": (lambda x: isinstance(x, str), "a string"), "l2": (is_number, "a finite number"),
            "family": (lambda x: isinstance(x, str), "a string"),
            "max_response_tokens": (_is_int, "an integer")}


def _options(values: dict) -> dict:
    for key, value in values.items():
        if key not in _OPTIONS:
            raise _Invalid(f"field 'options' has unknown key '{key}'")
        ok, what = _OPTIONS[key]
        if not ok(value):
            raise _Invalid(f"field 'options.{key}' must be {what}, got {value!r}")
    missing = [key for key in _OPTIONS if key not in values]
    if missing:
        raise _Invalid(f"field 'options' lacks '{missing[0]}'")

    try:
        FitOptions(**values).check(name=lambda key: f"field 'options.{key}'")
    except DriftError as e:
        raise _Invalid(str(e)) from None
    return values


def _timestamp(value: str, name: str) -> str:
    try:
        # Python < 3.11 does not accept a trailing "Z".
        t = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise _Invalid(f"field '{name}' is not an ISO 8601 time: {value!r}") from None
    if t.utcoffset() != timedelta(0):
        raise _Invalid(f"field '{name}' must be in UTC: {value!r}")
    return value


def _features(features, k: int, pair_ids: list, screened: bool):
    """Null entries (pair not scored under an attribute) only in a screened profile, in w and l alike."""
    if features is None:
        return None
    if not isinstance(features, dict):
        raise _Invalid(f"field 'features' must be an object or null, got {type(features).__name__}")
    rows = features.get("rows")
    if not isinstance(rows, list):
        raise _Invalid("field 'features.rows' must be a list")
    for j, row in enumerate(rows):
        name = f"features.rows[{j}]"
        if not isinstance(row, dict):
            raise _Invalid(f"field '{name}' must be an object, got {type(row).__name__}")
        if not isinstance(row.get("id"), str):
            raise _Invalid(f"field '{name}.id' must be a string")
        for key in ("w", "l"):
            if not isinstance(row.get(key), list):
                raise _Invalid(f"field '{name}.{key}' must be a list")
            row[key] = _numbers(row[key], f"{name}.{key}", k, nullable=screened)
        mismatch = [i for i, (w, l) in enumerate(zip(row["w"], row["l"])) if (w is None) != (l is None)]
        if mismatch:
            raise _Invalid(f"field '{name}' has a null in only one of 'w' and 'l' at index {mismatch[0]}")
        if "bow" in row:
            _bow(row["bow"], f"{name}.bow")
        if "group" in row and not isinstance(row["group"], str):
            raise _Invalid(f"field '{name}.group' must be a string")
    ids = [row["id"] for row in rows]
    if ids != pair_ids:
        j = next((j for j, (a, b) in enumerate(zip(ids, pair_ids)) if a != b), min(len(ids), len(pair_ids)))
        raise _Invalid(f"field 'features.rows' does not match 'pair_ids': {len(ids)} rows for {len(pair_ids)} "
                       f"pairs, first difference at index {j}")
    return features


def _bow(bow, name: str) -> None:
    if not (isinstance(bow, list) and len(bow) == 2 and all(isinstance(b, dict) for b in bow)):
        raise _Invalid(f"field '{name}' must be a list of two objects (word counts of chosen and rejected)")
    for b in bow:
        for word, count in b.items():
            if not _is_int(count) or count < 1:
                raise _Invalid(f"field '{name}' counts '{word}' {count!r} times; counts are positive integers")


def _choice(c, k: int):
    if c is None:
        return None
    if not isinstance(c, dict):
        raise _Invalid(f"field 'choice' must be an object or null, got {type(c).__name__}")
    family = c.get("family")
    if not (isinstance(family, list) and family and all(f in FAMILIES for f in family)
            and len(set(family)) == len(family)):
        raise _Invalid(f"field 'choice.family' must be a list of some of {', '.join(FAMILIES)}")
    if not isinstance(c.get("reason"), str) or not _is_int(c.get("n_pairs")):
        raise _Invalid("field 'choice' needs a string 'reason' and an integer 'n_pairs'")
    cv = c.get("cv")
    if not isinstance(cv, dict) or not all(isinstance(v, dict) and is_number(v.get("accuracy"))
                                           and is_number(v.get("se")) for v in cv.values()):
        raise _Invalid("field 'choice.cv' must map candidates to {accuracy, se} numbers")
    m = c.get("model")
    if not isinstance(m, dict) or not is_number(m.get("length")) or not is_number(m.get("word_norm")) \
            or not m["word_norm"] > 0:
        raise _Invalid("field 'choice.model' must hold numbers 'length' and 'word_norm' (> 0)")
    if m.get("attributes") is not None:
        if not isinstance(m["attributes"], list):
            raise _Invalid("field 'choice.model.attributes' must be a list or null")
        _numbers(m["attributes"], "choice.model.attributes", k)
    elif "attributes" in family:
        raise _Invalid("field 'choice.model.attributes' is null but the family has attributes")
    words = m.get("words")
    if not isinstance(words, dict) or not all(isinstance(v, list) and len(v) == 2 and all(map(is_number, v))
                                              for v in words.values()):
        raise _Invalid("field 'choice.model.words' must map words to [idf, weight]")
    shares = c.get("shares")
    if not (isinstance(shares, dict) and all(f in family and is_number(v) for f, v in shares.items())):
        raise _Invalid("field 'choice.shares' must map the model's families to numbers")
    return c


def _validate(obj: Any, where: str) -> ProfileData:
    try:
        return _check(obj)
    except _Invalid as e:
        raise DriftError(f"{where}: {e}") from None


def _check(obj: Any) -> ProfileData:
    if not isinstance(obj, dict):
        raise _Invalid(f"top level must be a JSON object, got {type(obj).__name__}")
    version = _expect(obj, "schema_version", int, "an integer")
    if version != SCHEMA_VERSION:  # older ones were migrated
        raise _Invalid(f"field 'schema_version' is {version}, this version of drift-cpp reads 1 to {SCHEMA_VERSION}")
    unknown = [name for name in obj if name not in FIELDS]
    if unknown:
        raise _Invalid(f"unknown field '{unknown[0]}'")

    model = _expect(obj, "model", dict, "an object")
    base = _prompt_entry(_expect(obj, "base", dict, "an object"), "base")
    attributes = _expect(obj, "attributes", list, "a list")
    if not attributes:
        raise _Invalid("field 'attributes' must not be empty")
    ids = set()
    for i, entry in enumerate(attributes):
        _prompt_entry(entry, f"attributes[{i}]")
        if entry["id"] in ids:
            raise _Invalid(f"field 'attributes' lists id '{entry['id']}' twice")
        ids.add(entry["id"])
    k = len(attributes)

    sums = _numbers(_expect(obj, "sums", list, "a list"), "sums", k)
    n_pairs = _expect(obj, "n_pairs", int, "an integer")
    if n_pairs < 0:
        raise _Invalid(f"field 'n_pairs' must be >= 0, got {n_pairs}")
    p = _unit_vector(_numbers(_expect(obj, "p", list, "a list"), "p", k))
    selected = _id_list(_expect(obj, "selected", list, "a list"), "selected", ids)
    decode_exclude = _id_list(_expect(obj, "decode_exclude", list, "a list"), "decode_exclude", ids)
    options = _options(_expect(obj, "options", dict, "an object"))
    pair_ids = _id_list(_expect(obj, "pair_ids", list, "a list"), "pair_ids", None)
    created_at = _timestamp(_expect(obj, "created_at", str, "a string"), "created_at")
    updated_at = _timestamp(_expect(obj, "updated_at", str, "a string"), "updated_at")
    if n_pairs != len(pair_ids):
        raise _Invalid(f"field 'n_pairs' is {n_pairs} but 'pair_ids' lists {len(pair_ids)}")
    screen = _screen(obj.get("screen"), ids)
    features = _features(obj.get("features"), k, pair_ids, screened=screen is not None)
    choice = _choice(obj.get("choice"), k)
    cost = _cost(obj.get("cost"))
    try:  # Python's json reads NaN and 1e999; in fields not checked above they would stop save()
        json.dumps(obj, allow_nan=False)
    except ValueError:
        raise _Invalid("a field holds NaN or an infinite number") from None

    return ProfileData(
        schema_version=version,
        model=model,
        base=base,
        attributes=attributes,
        sums=sums,
        n_pairs=n_pairs,
        p=p,
        selected=selected,
        decode_exclude=decode_exclude,
        options=options,
        pair_ids=pair_ids,
        created_at=created_at,
        updated_at=updated_at,
        features=features,
        choice=choice,
        screen=screen,
        cost=cost,
    )


def _screen(screen, ids: set) -> Optional[dict]:
    if screen is None:
        return None
    from .screening import ScreenOptions

    if not isinstance(screen, dict) or set(screen) != {"options", "kept"}:
        raise _Invalid("field 'screen' must be an object with 'options' and 'kept'")
    if not isinstance(screen["options"], dict):
        raise _Invalid("field 'screen.options' must be an object")
    try:
        ScreenOptions.from_dict(screen["options"], name=lambda key: f"field 'screen.options.{key}'")
    except (DriftError, TypeError) as e:
        raise _Invalid(str(e)) from None
    _id_list(_expect(screen, "kept", list, "a list"), "screen.kept", ids)
    return screen


COST_FIELDS = {"tokens_evaluated": int, "seconds": float, "items_scored": int, "items_cached": int}


def _cost(cost) -> Optional[dict]:
    if cost is None:
        return None
    if not isinstance(cost, dict) or set(cost) != set(COST_FIELDS):
        raise _Invalid(f"field 'cost' must be an object with {', '.join(COST_FIELDS)}")
    for key, kind in COST_FIELDS.items():
        value = cost[key]
        ok = _is_int(value) if kind is int else is_number(value)
        if not ok or value < 0:
            raise _Invalid(f"field 'cost.{key}' must be a number >= 0, got {value!r}")
    return cost
