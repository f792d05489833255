"""The native runtime on real models: one libllama, chat templates, model errors, vocabularies."""

import subprocess
import sys

import pytest

from drift_cpp.errors import DriftError
from drift_cpp.models import Model, ModelOptions
from drift_cpp.runtime import _core


def test_one_libllama_with_llama_cpp_python_and_core(smollm, reference_llm):
    # Both run in this process, and only one copy of libllama is mapped.
    reference_llm.reset()
    reference_llm.eval(reference_llm.tokenize(b"Hello"))
    assert smollm.core.tokenize("Hello", False, False) == reference_llm.tokenize(b"Hello", add_bos=False)
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "libllama" in line}
    assert len(libs) == 1, libs
    assert libs.pop().endswith("llama_cpp/lib/libllama.so")


def test_smollm_renders_its_gguf_chatml_template(smollm):
    assert smollm.template.name == "gguf"
    text = smollm.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                          {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}])
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                    "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n")


def test_gemma_has_no_template_and_falls_back_to_named_one(gemma):
    assert gemma.core.chat_template == ""
    assert gemma.template.name == "gemma"
    text = gemma.render([{"role": "user", "content": "Hi"}])
    assert text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    with pytest.raises(DriftError, match="no chat template"):
        Model(gemma.path, ModelOptions())
    with pytest.raises(DriftError, match="unknown chat template 'nope'"):
        Model(gemma.path, ModelOptions(chat_template="nope"))


def test_vocab_check_rejects_smollm_with_gemma(smollm, gemma):
    _core.check_vocab_compatible(smollm.core, smollm.core)
    with pytest.raises(DriftError, match="do not share a vocabulary"):
        _core.check_vocab_compatible(smollm.core, gemma.core)


@pytest.mark.parametrize("content, message", [
    (None, "no such model file"),
    (b"not a model at all", "not a GGUF file"),
    ("truncated", "could not load"),
    ("unknown-arch", "could not load"),
])
def test_bad_model_files_give_clear_errors(tmp_path, smollm, content, message):
    path = tmp_path / "model.gguf"
    if content == "truncated":
        path.write_bytes(smollm.path.read_bytes()[: 5_000_000])
    elif content == "unknown-arch":
        data = smollm.path.read_bytes()
        path.write_bytes(data.replace(b"llama", b"zzzzz", 3))  # general.architecture and its keys
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DriftError, match=message):
        Model(path)


def test_cli_reports_bad_model_in_one_line(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "score", "--system", "S", "--prompt", "P",
                          "--response", "R", "--model", str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {bad}: not a GGUF file"
