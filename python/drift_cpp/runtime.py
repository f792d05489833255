"""Loads the native core next to llama-cpp-python's libllama.

llama_cpp is imported first: it dlopens llama_cpp/lib/libllama.so by full path,
and _core's RUNPATH then resolves to that same, already loaded, library.
"""

import os

import llama_cpp  # noqa: F401  (must come before _core)

from . import _core

LOG_ENV = "DRIFT_CPP_LOG"


def set_verbose(enabled: bool) -> None:
    """Turn llama.cpp's own logging on or off (off by default)."""
    _core.set_logging(enabled)


set_verbose(os.environ.get(LOG_ENV, "") not in ("", "0"))
