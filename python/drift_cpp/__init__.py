"""drift-cpp: personalized generation with Drift (decoding-time personalized alignment) over llama.cpp.

Data flows: preferences → scorer (zero-shot rewards) → approximation → profile → decoding → cli.
"""

from . import runtime  # noqa: F401  (loads llama_cpp, then the native core)
from .errors import DriftError

__all__ = ["DriftError"]
__version__ = "0.1.0"
