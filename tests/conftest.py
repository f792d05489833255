"""Shared fixtures: real models, loaded once per test session."""

from pathlib import Path

import pytest

# DSP (Cheng et al. 2023, "Everyone Deserves A Reward", CC BY-NC 4.0), beside the checkout.
DSP_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsp" / "dsp_dev.jsonl"


@pytest.fixture(scope="session")
def smollm():
    from drift_cpp.models import load_model
    return load_model()


@pytest.fixture(scope="session")
def gemma():
    from drift_cpp.models import load_model
    return load_model("gemma")


@pytest.fixture(scope="session")
def reference_llm(smollm):
    """llama-cpp-python's own Llama on the same file: the independent reference."""
    from drift_cpp.runtime import reference_llama
    return reference_llama(smollm.path, logits_all=True, n_ctx=2048, n_threads=2)


@pytest.fixture()
def dsp() -> Path:
    if not DSP_PATH.exists():
        pytest.skip(f"DSP data not found at {DSP_PATH}")
    return DSP_PATH


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFT_CPP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
