"""Models the user already has: found where Hugging Face, Ollama, LM Studio and llama.cpp keep them,
addressed by name, and paired only when their tokenizers are the same (not merely the same size)."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from drift_cpp.cli import main
from drift_cpp.errors import DriftError
from drift_cpp.models import resolve_model

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF = f"hf:{REPO}/{FILE}"
OLLAMA = "ollama:smollm2:135m"
LMSTUDIO = f"lmstudio:lmstudio-community/SmolLM2-135M-Instruct-GGUF/{FILE}"
LLAMACPP = f"llamacpp:HuggingFaceTB_SmolLM2-135M-Instruct-GGUF_{FILE}"
EMBEDDED_NAMES = ("smollm2", HF, OLLAMA, "ollama:smollm2:latest", LMSTUDIO, LLAMACPP)


def _link(link, target):
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _rewrite(source, target, tokens=None, specials=None):
    """A tensor-less GGUF with `source`'s tokenizer, its token list or special token ids changed."""
    from gguf import GGUFReader, GGUFWriter

    reader = GGUFReader(source)
    ids = {k: int(reader.fields[k].contents()) for k in reader.fields
           if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")}
    writer = GGUFWriter(target, "llama")
    writer.add_tokenizer_model(reader.fields["tokenizer.ggml.model"].contents())
    writer.add_token_list(tokens(reader.fields["tokenizer.ggml.tokens"].contents()) if tokens
                          else reader.fields["tokenizer.ggml.tokens"].contents())
    for key, value in {**ids, **(specials or {})}.items():
        writer.add_uint32(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _swap(tokens):
    """The same tokens, two of them in each other's place: a list of the same size and the same set."""
    tokens = list(tokens)
    tokens[100], tokens[101] = tokens[101], tokens[100]
    return tokens


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Each store's layout, holding the embedded model, plus files that must or must not pair with it."""
    root = tmp_path_factory.mktemp("stores")
    model = resolve_model(None)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()  # Ollama names a blob by its content

    hub = root / "hf" / f"models--{REPO.replace('/', '--')}"
    _link(hub / "blobs" / digest, model)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0123abcd")
    _link(hub / "snapshots" / "0123abcd" / FILE, f"../../blobs/{digest}")
    _link(hub / "snapshots" / "0123abcd" / "SmolLM2-135M-Instruct.Q8_0.gguf", f"../../blobs/{digest}")
    _link(hub / "snapshots" / "0123abcd" / "SmolLM2-135M-Instruct.Q4_1-00002-of-00002.gguf", f"../../blobs/{digest}")

    ollama = root / "ollama"
    _link(ollama / "blobs" / f"sha256-{digest}", model)
    manifest = {"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": model.stat().st_size},
    ]}
    for tag in ("135m", "latest"):
        path = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest))

    home = root / "home"
    _link(home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-GGUF" / FILE, model)

    cache = root / "llama.cpp"
    _link(cache / LLAMACPP.removeprefix("llamacpp:"), model)
    cache.joinpath("broken.gguf").write_bytes(b"not a GGUF at all")
    _rewrite(model, cache / "swapped-tokens.gguf", tokens=_swap)
    _rewrite(model, cache / "other-eos.gguf", specials={"tokenizer.ggml.eos_token_id": 3})
    _rewrite(model, cache / "same-tokenizer.gguf")
    return {"root": root, "model": model, "home": home, "hf": root / "hf", "ollama": ollama, "llamacpp": cache}


@pytest.fixture()
def stores(layout, monkeypatch):
    monkeypatch.setenv("HOME", str(layout["home"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(layout["hf"]))
    monkeypatch.setenv("OLLAMA_MODELS", str(layout["ollama"]))
    monkeypatch.setenv("LLAMA_CACHE", str(layout["llamacpp"]))
    monkeypatch.setenv("DRIFT_CPP_CACHE", str(layout["root"] / "cache"))  # read each file's metadata once
    return layout


def _models_json():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_models_json_finds_each_store_resolves_its_names_and_pairs_them(stores):
    report = _models_json()
    found = {r["name"]: r for r in report["found"]}
    for name in EMBEDDED_NAMES:
        row = found[name]
        assert resolve_model(name).resolve() == stores["model"].resolve(), name
        assert (row["architecture"], row["quantization"], row["vocabulary"], row["chat_template"]) == \
            ("llama", "Q4_1", 49152, True)
    pairs = {(p["llm"], p["slm"]) for p in report["pairs"]}
    assert {(a, b) for a in EMBEDDED_NAMES for b in EMBEDDED_NAMES} <= pairs  # each with itself and the others
    assert len({found[n]["tokenizer"] for n in EMBEDDED_NAMES}) == 1
    # The tokenizer is read, not the file: a fresh, tensor-less file with the same tokenizer pairs too.
    assert ("smollm2", "llamacpp:same-tokenizer.gguf") in pairs
    assert found["llamacpp:same-tokenizer.gguf"]["parameters"] == 0 < found["smollm2"]["parameters"]
    # A later part of a split model is part of its first, and a file that is not GGUF is reported, not fatal.
    assert not any("00002-of" in n for n in found)
    assert [u["name"] for u in report["unreadable"]] == ["llamacpp:broken.gguf"]
    text = CliRunner().invoke(main, ["models"]).output
    assert all(f"  {name}\n" in text for name in EMBEDDED_NAMES[1:])  # the presets have their own table


@pytest.mark.parametrize("other", ["llamacpp:swapped-tokens.gguf", "llamacpp:other-eos.gguf"])
def test_a_tokenizer_of_the_same_size_but_other_tokens_or_special_ids_does_not_pair(stores, other):
    report = _models_json()
    found = {r["name"]: r for r in report["found"]}
    assert found[other]["vocabulary"] == found["smollm2"]["vocabulary"]
    assert found[other]["tokenizer"] != found["smollm2"]["tokenizer"]
    assert {(p["llm"], p["slm"]) for p in report["pairs"] if other in (p["llm"], p["slm"])} == {(other, other)}


def test_names_pick_one_file(stores):
    assert resolve_model(f"hf:{REPO}/Q4_1") == resolve_model(HF)  # a piece of the file name, as llama.cpp's -hf
    assert resolve_model("ollama:smollm2") == resolve_model("ollama:smollm2:latest")
    assert resolve_model("lmstudio:lmstudio-community/SmolLM2-135M-Instruct-GGUF").resolve() == \
        stores["model"].resolve()  # a repo with one file names it


@pytest.mark.parametrize("name, says", [
    (f"hf:{REPO}", f"ambiguous: it names {HF}, hf:{REPO}/SmolLM2-135M-Instruct.Q8_0.gguf"),
    ("ollama:smollm2:7b", "store ({ollama}); found there: ollama:smollm2:135m, ollama:smollm2:latest"),
    ("hf:nobody/nothing", f"no such model in the hf store ({{hf}}); found there: {HF}"),
])
def test_an_unknown_or_ambiguous_name_is_one_line_listing_what_was_found(stores, name, says):
    says = says.format(**stores)
    with pytest.raises(DriftError) as error:
        resolve_model(name)
    assert says in str(error.value) and "\n" not in str(error.value)
    result = CliRunner().invoke(main, ["--threads", "1", "generate", "--llm", name, "--prompt", "Hi"])
    assert result.exit_code != 0 and says in result.output and len(result.output.strip().splitlines()) == 1


def test_a_store_name_decodes_as_its_file_does(stores):
    args = ["--threads", "1", "generate", "--prompt", "Name a fruit.", "--temperature", "0", "--max-tokens", "8",
            "--json"]
    by_name = CliRunner().invoke(main, [*args, "--llm", OLLAMA, "--slm", f"hf:{REPO}/Q4_1"])
    by_path = CliRunner().invoke(main, [*args, "--llm", str(stores["model"]), "--slm", str(stores["model"])])
    assert by_name.exit_code == 0, by_name.output
    assert json.loads(by_name.output)["text"] == json.loads(by_path.output)["text"] != ""
