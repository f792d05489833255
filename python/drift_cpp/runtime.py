"""Loads the native core next to llama-cpp-python's libllama.

llama_cpp is imported first: it dlopens llama_cpp/lib/libllama.so by full path,
and _core's RUNPATH then resolves to that same, already loaded, library.
"""

import os

import llama_cpp  # noqa: F401  (must come before _core)

from . import _core

LOG_ENV = "DRIFT_CPP_LOG"


def reference_llama(path, **kwargs) -> "llama_cpp.Llama":
    """llama-cpp-python's Llama on `path`, with weights placed as drift-cpp places them.

    Where the CPU backend offers its AMX buffer, whose matmul crashes on some machines
    (llama.cpp issue #20824), drift-cpp loads without extra buffer types; so does this Llama,
    for it is the independent reference of the tests and the naive way of the benchmarks.
    """
    import llama_cpp.llama as module

    defaults = module.llama_cpp.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = _core.extra_buffers_safe()
        return p

    if "n_threads" in kwargs:  # its prompt threads default to every core, not to n_threads
        kwargs.setdefault("n_threads_batch", kwargs["n_threads"])
    module.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(str(path), verbose=False, **kwargs)
    finally:
        module.llama_cpp.llama_model_default_params = defaults


def set_verbose(enabled: bool) -> None:
    """Turn llama.cpp's own logging on or off (off by default)."""
    _core.set_logging(enabled)


set_verbose(os.environ.get(LOG_ENV, "") not in ("", "0"))
