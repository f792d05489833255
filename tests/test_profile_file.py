"""The profile JSON format: round trip, atomic save, one-line load errors."""

import json
import os

import numpy as np
import pytest

from drift_cpp.fit import profile_file as pf
from drift_cpp.errors import DriftError


def sample(**changes):
    data = pf.ProfileData(
        schema_version=pf.SCHEMA_VERSION,
        model={"path": "/m/model.gguf", "name": "model", "size_bytes": 123, "sha256": "ab" * 32},
        base={"id": "base", "name": "Base", "prompt": "You are an AI assistant."},
        attributes=[
            {"id": "concise", "name": "Concise", "prompt": "You are a concise AI assistant."},
            {"id": "emotional", "name": "Emotional", "prompt": "You are an emotional AI assistant."},
            {"id": "formal", "name": "Formal", "prompt": "You are a formal AI assistant."},
        ],
        sums=[1.5, -0.25, 0.1],
        n_pairs=2,
        p=[0.98426807238718, -0.16404467873119666, 0.06561787149247866],  # unit norm
        selected=["concise", "emotional"],
        decode_exclude=["formal"],
        options={"normalize": "mean", "method": "qp", "top": 2, "l2": 1.0, "family": "auto", "max_response_tokens": 0},
        pair_ids=["pair-1", "pair-2"],
        created_at="2025-01-31T12:00:00Z",
        updated_at="2025-02-01T08:30:00+00:00",
        features={"rows": [{"id": "pair-1", "w": [1.0, 0.0, 0.1], "l": [0.0, 0.5, 0.0]},
                           {"id": "pair-2", "w": [0.5, 0.25, 0.0], "l": [0.0, 0.0, 0.0]}]},
    )
    for key, value in changes.items():
        setattr(data, key, value)
    return data


def test_round_trip(tmp_path):
    path = tmp_path / "profile.json"
    data = sample()
    pf.save(path, data)
    assert pf.load(path) == data
    assert pf.to_json(pf.load(path)) == path.read_text(encoding="utf-8")


def test_round_trip_without_features_and_with_numpy_values(tmp_path):
    path = tmp_path / "profile.json"
    p = np.array([0.6, 0.8, 0.0])
    pf.save(path, sample(features=None, p=p, sums=np.float64(2.0) * p, n_pairs=2))
    loaded = pf.load(path)
    assert loaded.features is None
    assert loaded.p == [0.6, 0.8, 0.0] and loaded.sums == [1.2, 1.6, 0.0]


def test_json_layout_is_stable():
    text = pf.to_json(sample())
    assert text == pf.to_json(sample())
    assert text.startswith('{\n  "schema_version": 2,\n  "model": {')
    assert list(json.loads(text)) == [
        "schema_version", "model", "base", "attributes", "sums", "n_pairs", "p", "selected",
        "decode_exclude", "options", "pair_ids", "created_at", "updated_at", "features",
    ]


def test_utc_now_is_accepted(tmp_path):
    path = tmp_path / "profile.json"
    now = pf.utc_now()
    assert now.endswith("Z")
    pf.save(path, sample(created_at=now, updated_at=now))
    assert pf.load(path).created_at == now


def test_failed_replace_keeps_old_file_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "profile.json"
    pf.save(path, sample())
    old = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DriftError, match=r"profile\.json: cannot write: disk on fire$"):
        pf.save(path, sample(sums=[0.0, 0.0, 0.0]))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["profile.json"]


def test_unserializable_or_invalid_data_is_not_written(tmp_path):
    path = tmp_path / "profile.json"
    pf.save(path, sample())
    old = path.read_bytes()
    with pytest.raises(DriftError, match="cannot serialize"):
        pf.save(path, sample(p=[float("nan"), 0.0, 1.0]))
    with pytest.raises(DriftError, match="'selected' names unknown attribute 'nope'"):
        pf.save(path, sample(selected=["nope"]))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["profile.json"]


# --- load errors ----------------------------------------------------------------------


def load_error(tmp_path, text):
    path = tmp_path / "profile.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DriftError) as info:
        pf.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: "):]


def with_field(name, value):
    obj = json.loads(pf.to_json(sample()))
    obj[name] = value
    return json.dumps(obj)


def without_field(name):
    obj = json.loads(pf.to_json(sample()))
    del obj[name]
    return json.dumps(obj)


def test_missing_file(tmp_path):
    path = tmp_path / "profile.json"
    with pytest.raises(DriftError, match=r"profile\.json: file not found$"):
        pf.load(path)


def test_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text('{\n  "schema_version": 1,\n  oops\n}', encoding="utf-8")
    with pytest.raises(DriftError) as info:
        pf.load(path)
    assert str(info.value) == f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes (column 3)"


def test_not_an_object(tmp_path):
    assert load_error(tmp_path, "[1, 2]") == "top level must be a JSON object, got list"


def test_wrong_schema_version(tmp_path):
    assert "'schema_version' is 3" in load_error(tmp_path, with_field("schema_version", 3))
    assert "'schema_version' is 0" in load_error(tmp_path, with_field("schema_version", 0))
    assert load_error(tmp_path, with_field("schema_version", "1")) == (
        "field 'schema_version' must be an integer, got str")


@pytest.mark.parametrize("name", [
    "schema_version", "model", "base", "attributes", "sums", "n_pairs", "p", "selected",
    "decode_exclude", "options", "pair_ids", "created_at", "updated_at",
])
def test_missing_field(tmp_path, name):
    assert load_error(tmp_path, without_field(name)) == f"missing field '{name}'"


def test_features_may_be_absent(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(without_field("features"), encoding="utf-8")
    assert pf.load(path).features is None


# A joint model's record over the sample's three attributes (choice_to_dict's shape).
JOINT_CHOICE = {"family": ["attributes", "length"], "reason": "r", "n_pairs": 12, "cv": {},
                "shares": {"attributes": 0.25, "length": 0.75},
                "model": {"attributes": [0.1, 0.2, 0.3], "length": 0.5, "words": {}, "word_norm": 1.0}}


def test_a_choice_with_shares_loads(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(with_field("choice", JOINT_CHOICE), encoding="utf-8")
    assert pf.load(path).choice["shares"] == {"attributes": 0.25, "length": 0.75}


@pytest.mark.parametrize("name, value, expected", [
    ("model", [], "field 'model' must be an object, got list"),
    ("base", "base", "field 'base' must be an object, got str"),
    ("base", {"id": "base", "name": "Base"}, "field 'base': missing field 'prompt'"),
    ("attributes", {}, "field 'attributes' must be a list, got dict"),
    ("attributes", [], "field 'attributes' must not be empty"),
    ("attributes", [{"id": "a", "name": "A", "prompt": 3}], "field 'attributes[0]': field 'prompt' must be a string"),
    ("sums", "1,2,3", "field 'sums' must be a list, got str"),
    ("sums", [1.0, "x", 2.0], "field 'sums[1]' must be a finite number, got 'x'"),
    ("sums", [1.0, True, 2.0], "field 'sums[1]' must be a finite number, got True"),
    ("n_pairs", 2.0, "field 'n_pairs' must be an integer, got float"),
    ("n_pairs", -1, "field 'n_pairs' must be >= 0, got -1"),
    ("p", None, "field 'p' must be a list, got NoneType"),
    ("selected", "concise", "field 'selected' must be a list, got str"),
    ("selected", [1], "field 'selected[0]' must be a string, got int"),
    ("decode_exclude", {}, "field 'decode_exclude' must be a list, got dict"),
    ("options", [], "field 'options' must be an object, got list"),
    ("options", {"method": "bt", "colour": "blue"}, "field 'options' has unknown key 'colour'"),
    ("options", {"method": "bt", "l2": "1000"}, "field 'options.l2' must be a finite number, got '1000'"),
    ("options", {"top": 7.5}, "field 'options.top' must be an integer, got 7.5"),
    ("pair_ids", ["a", 2], "field 'pair_ids[1]' must be a string, got int"),
    ("pair_ids", ["a", "a"], "field 'pair_ids' lists 'a' twice"),
    ("created_at", 5, "field 'created_at' must be a string, got int"),
    ("created_at", "yesterday", "field 'created_at' is not an ISO 8601 time: 'yesterday'"),
    ("updated_at", "2025-01-01T00:00:00+02:00", "field 'updated_at' must be in UTC: '2025-01-01T00:00:00+02:00'"),
    ("updated_at", "2025-01-01T00:00:00", "field 'updated_at' must be in UTC: '2025-01-01T00:00:00'"),
    ("features", [], "field 'features' must be an object or null, got list"),
    ("features", {}, "field 'features.rows' must be a list"),
    ("features", {"rows": [{"id": "x", "w": [1.0, 2.0, 3.0], "l": [1.0]}]},
     "field 'features.rows[0].l' has 1 entries but 'attributes' has 3"),
    ("features", {"rows": [{"w": [1.0, 2.0, 3.0], "l": [1.0, 2.0, 3.0]}]},
     "field 'features.rows[0].id' must be a string"),
    ("choice", {**JOINT_CHOICE, "shares": {"lexical": 0.5}}, "field 'choice.shares' must map the model's families to numbers"),
    ("choice", {**JOINT_CHOICE, "shares": {"length": "most"}}, "field 'choice.shares' must map the model's families to numbers"),
])
def test_wrongly_typed_fields(tmp_path, name, value, expected):
    assert load_error(tmp_path, with_field(name, value)) == expected


def test_unknown_field(tmp_path):
    assert load_error(tmp_path, with_field("colour", "blue")) == "unknown field 'colour'"


def test_duplicate_attribute_id(tmp_path):
    attrs = sample().attributes
    attrs[2] = dict(attrs[0])
    assert load_error(tmp_path, with_field("attributes", attrs)) == "field 'attributes' lists id 'concise' twice"


@pytest.mark.parametrize("name", ["sums", "p"])
def test_lengths_must_match_attributes(tmp_path, name):
    assert load_error(tmp_path, with_field(name, [1.0, 0.0])) == (
        f"field '{name}' has 2 entries but 'attributes' has 3")


def test_non_finite_numbers(tmp_path):
    # Python's json reads NaN, which is not valid JSON but must still be refused
    text = pf.to_json(sample()).replace("-0.25", "NaN")
    assert load_error(tmp_path, text) == "field 'sums[1]' must be a finite number, got nan"


@pytest.mark.parametrize("name", ["selected", "decode_exclude"])
def test_unknown_attribute_ids(tmp_path, name):
    assert load_error(tmp_path, with_field(name, ["concise", "sarcastic"])) == (
        f"field '{name}' names unknown attribute 'sarcastic'")


# --- older versions: one migration to the current schema ------------------------------


def fitted(tmp_path, oldest=False):
    """A fitted profile saved now, with the values that a version-1 file lacking them meant (V1_OPTIONS,
    no shares); oldest: also as the first profiles were, with no bags of words, prompt groups or choice."""
    from drift_cpp.fit.options import FitOptions
    from drift_cpp.fit.profile import Profile
    from test_choice import synthetic_profile

    profile, _ = synthetic_profile("length")
    profile.options = FitOptions(**pf.V1_OPTIONS)
    profile.choice.shares = {}
    if oldest:
        profile.bows = profile.groups = profile.choice = None
    path = tmp_path / "v2.json"
    profile.save(path)
    return path, json.loads(path.read_text(encoding="utf-8"))


def as_version_1(tmp_path, doc, *removals):
    """doc written as a version-1 file that lacks each (object path, key) of removals."""
    old = json.loads(json.dumps(doc))
    old["schema_version"] = 1
    for where, key in removals:
        obj = old
        for name in where:
            obj = obj[name]
        del obj[key]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    return path, old


OPTIONS_ADDED = [(("options",), key) for key in ("l2", "family", "max_response_tokens")]  # each in a later v1
V1_SHAPES = {
    "as last written": [],
    "before l2": OPTIONS_ADDED[:1],
    "before the family option": OPTIONS_ADDED[1:2],
    "before truncation": OPTIONS_ADDED[2:],
    "before the joint model's shares": [(("choice",), "shares")],
    "with no options at all": [(("options",), key) for key in pf.V1_OPTIONS],
    "every one of them": OPTIONS_ADDED + [(("choice",), "shares")],
}


@pytest.mark.parametrize("shape", list(V1_SHAPES))
def test_each_version_1_shape_migrates_to_the_freshly_saved_version_2(tmp_path, shape):
    from drift_cpp.fit.profile import Profile
    new, doc = fitted(tmp_path)
    assert doc["schema_version"] == pf.SCHEMA_VERSION == 2
    old, old_doc = as_version_1(tmp_path, doc, *V1_SHAPES[shape])
    assert pf.migrate(old_doc) == doc
    assert pf.load(old) == pf.load(new)
    Profile.load(old).save(old)  # saving writes version 2: the old file becomes the fresh one
    assert old.read_text(encoding="utf-8") == new.read_text(encoding="utf-8")


def test_the_first_profiles_load_and_save_as_version_2(tmp_path):
    """As drift-cpp first wrote them: three options, rows of w and l only, no choice, screen or cost."""
    from drift_cpp.fit.profile import Profile
    new, doc = fitted(tmp_path, oldest=True)
    assert "choice" not in doc and not any("bow" in row or "group" in row for row in doc["features"]["rows"])
    old, _ = as_version_1(tmp_path, doc, *OPTIONS_ADDED, ((), "cost"))
    Profile.load(old).save(old)
    assert old.read_text(encoding="utf-8") == new.read_text(encoding="utf-8")


def test_a_current_file_must_hold_every_option_and_the_shares(tmp_path):
    """What a version-1 file may lack, a version-2 file may not: absent, it would read as a default."""
    _, doc = fitted(tmp_path)
    del doc["options"]["l2"]
    assert load_error(tmp_path, json.dumps(doc)) == "field 'options' lacks 'l2'"
    _, doc = fitted(tmp_path)
    del doc["choice"]["shares"]
    assert load_error(tmp_path, json.dumps(doc)) == "field 'choice.shares' must map the model's families to numbers"
