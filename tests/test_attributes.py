import json

import pytest

from drift_cpp.score.attributes import (
    Attribute,
    AttributeSet,
    builtin_attributes,
    load_attributes_file,
)
from drift_cpp.errors import DriftError


@pytest.fixture
def builtin():
    return builtin_attributes()


def test_builtin_has_paper_table_6(builtin):
    assert len(builtin.attributes) == 41
    assert len(set(builtin.ids)) == 41
    assert builtin.base == Attribute("base", "Base", "You are an AI assistant.")
    assert builtin.ids[0] == "formal" and builtin.ids[19] == "vague"
    assert builtin.ids[20] == "creative" and builtin.ids[-1] == "eco_friendly"
    for id_ in ("old_fashioned", "internet_slang", "tech_industry_priority", "eco_friendly"):
        assert id_ in builtin.ids


@pytest.mark.parametrize(
    "id_, name, prompt",
    [
        ("concise", "Concise", "You are an AI assistant with a concise response rather than verbosity."),
        ("hedonist", "Hedonist", "You are an AI assistant that prioritizes maximizing pleasure and joy while minimizing pain and discomfort."),
        ("pessimistic", "Pessimistic", "You are an AI assistant that views situations through a skeptical or cautious perspective."),
        ("storyteller", "Storyteller", "You are an AI assistant that loves explaining things through stories and anecdotes."),
        ("direct", "Direct", "You are an AI assistant with a firm and directive tone."),
        ("old_fashioned", "Old-fashioned", "You are an AI assistant using old-fashioned English."),
        ("tech_industry_priority", "Tech Industry Priority", "You are an AI assistant that prioritizes technological and industrial advancement above all else."),
    ],
)
def test_exact_prompts(builtin, id_, name, prompt):
    assert builtin.get(id_) == Attribute(id_, name, prompt)


def test_no_pdf_artifacts(builtin):
    for a in builtin.attributes:
        assert "- " not in a.prompt and a.prompt.endswith(".") and a.prompt.startswith("You are ")


def test_select_include_exclude_keeps_order(builtin):
    s = builtin.select(include=["humor", "formal", "concise"])
    assert s.ids == ("formal", "concise", "humor")
    assert s.base == builtin.base
    assert builtin.select(exclude=["formal"]).ids == builtin.ids[1:]
    assert builtin.select(include=["formal", "concise"], exclude=["formal"]).ids == ("concise",)
    assert s.prompts == tuple(builtin.get(i).prompt for i in s.ids)


def test_select_unknown_ids(builtin):
    with pytest.raises(DriftError) as e:
        builtin.select(include=["formal", "nope"], exclude=["zzz"])
    msg = str(e.value)
    assert msg.startswith("unknown attribute id(s): nope, zzz (valid: formal, concise,")
    assert "eco_friendly)" in msg


def test_select_nothing_left(builtin):
    with pytest.raises(DriftError, match="no attributes left"):
        builtin.select(include=["formal"], exclude=["formal"])


def test_get_unknown(builtin):
    with pytest.raises(DriftError, match="unknown attribute id: nope"):
        builtin.get("nope")


def test_extend(builtin):
    small = builtin.select(include=["formal"])
    new = Attribute("pirate", "Pirate", "You are a pirate AI assistant.")
    ext = small.extend([new, builtin.get("formal")])  # identical re-add is a no-op
    assert ext.ids == ("formal", "pirate")
    with pytest.raises(DriftError, match="'formal' is already defined with a different prompt"):
        small.extend([Attribute("formal", "Formal", "Be formal.")])
    with pytest.raises(DriftError, match="reserved"):
        small.extend([Attribute("base", "B", "x")])


def test_dict_round_trip(builtin):
    d = builtin.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert AttributeSet.from_dict(d) == builtin
    with pytest.raises(DriftError, match="invalid attribute set"):
        AttributeSet.from_dict({"base": d["base"]})
    with pytest.raises(DriftError, match="duplicate attribute id 'formal'"):
        AttributeSet.from_dict({"base": d["base"], "attributes": [d["attributes"][0]] * 2})


def test_load_toml(tmp_path, builtin):
    p = tmp_path / "my.toml"
    p.write_text(
        '[[attributes]]\nid = "pirate"\nprompt = "You are a pirate AI assistant."\n\n'
        '[[attributes]]\nid = "chef"\nname = "Chef"\nprompt = "You are a chef AI assistant."\n'
    )
    s = load_attributes_file(p, into=builtin.select(include=["formal"]))
    assert s.ids == ("formal", "pirate", "chef")
    assert s.get("pirate") == Attribute("pirate", "pirate", "You are a pirate AI assistant.")
    assert s.get("chef").name == "Chef"
    assert s.base == builtin.base


def test_load_json_with_base(tmp_path, builtin):
    p = tmp_path / "my.json"
    p.write_text(json.dumps({"base": "You are a helper.", "attributes": [{"id": "formal", "prompt": builtin.get("formal").prompt}]}))
    s = load_attributes_file(p, into=builtin)
    assert s.base == Attribute("base", "Base", "You are a helper.")
    assert s.ids == builtin.ids


def attr_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DriftError) as e:
        load_attributes_file(p, into=builtin_attributes())
    return str(e.value).replace(str(tmp_path) + "/", "")


def toml_attrs(*entries):
    return "".join("[[attributes]]\n" + "".join(f'{k} = "{v}"\n' for k, v in e.items()) for e in entries)


def test_file_errors(tmp_path):
    ok = {"id": "a", "prompt": "A."}
    assert attr_error(tmp_path, "myattrs.toml", toml_attrs(ok, {"id": "b", "prompt": "B."}, {"id": "c"})) == (
        "myattrs.toml: attributes[2]: missing field 'prompt'"
    )
    assert attr_error(tmp_path, "m.toml", toml_attrs({"id": "a", "prompt": "  "})) == "m.toml: attributes[0]: field 'prompt' is empty"
    assert attr_error(tmp_path, "m.toml", toml_attrs(ok, ok)) == "m.toml: attributes[1]: duplicate id 'a' (also attributes[0])"
    assert attr_error(tmp_path, "m.toml", toml_attrs({"id": "formal", "prompt": "Be formal."})) == (
        "m.toml: attributes[0]: id 'formal' is already defined with a different prompt"
    )
    assert attr_error(tmp_path, "m.toml", toml_attrs({"id": "base", "prompt": "x"})) == (
        "m.toml: attributes[0]: id 'base' is reserved for the base prompt"
    )
    assert attr_error(tmp_path, "m.toml", toml_attrs({"id": "a b", "prompt": "x"})).startswith("m.toml: attributes[0]: id 'a b' may only use")
    assert attr_error(tmp_path, "m.toml", toml_attrs({"id": "a", "promt": "x"})) == "m.toml: attributes[0]: unknown field 'promt'"
    assert attr_error(tmp_path, "m.toml", 'base = "x"\n') == "m.toml: missing field 'attributes'"
    assert attr_error(tmp_path, "m.toml", "attributes = []\n") == "m.toml: no attributes"
    assert attr_error(tmp_path, "m.json", '{"attributes": [{"id": 3, "prompt": "x"}]}') == "m.json: attributes[0]: field 'id' must be a string"
    assert attr_error(tmp_path, "m.json", '{"attributes": "x"}') == "m.json: field 'attributes' must be a list"
    assert attr_error(tmp_path, "m.yaml", "x") == "m.yaml: unsupported file type '.yaml' (use .toml or .json)"


def test_syntax_and_encoding_errors(tmp_path):
    msg = attr_error(tmp_path, "bad.toml", '[[attributes]]\nid = "a"\nprompt = \n')
    assert msg.startswith("bad.toml:3: invalid TOML:") and msg.endswith(")")
    msg = attr_error(tmp_path, "bad.json", '{\n"attributes": [\n{"id": "a",}\n]}')
    assert msg.startswith("bad.json:3: invalid JSON:")
    assert attr_error(tmp_path, "enc.toml", b'[[attributes]]\nid = "a"\nprompt = "caf\xe9"\n') == "enc.toml:3: not valid UTF-8"
    assert attr_error(tmp_path, "empty.toml", "") == "empty.toml: missing field 'attributes'"
    p = tmp_path / "nowhere.toml"
    with pytest.raises(DriftError, match="nowhere.toml: file not found$"):
        load_attributes_file(p, into=builtin_attributes())
