"""Shared fixtures: real models, loaded once per test session."""

import pytest


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
    import llama_cpp
    return llama_cpp.Llama(str(smollm.path), logits_all=True, verbose=False, n_ctx=2048, n_threads=2)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFT_CPP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
