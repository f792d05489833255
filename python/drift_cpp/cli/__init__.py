"""The drift-cpp command line: preferences → profile → personalized generation.

One module a job; importing them registers their commands on the group."""

from . import bench, chat, fit, generate, serve, show  # noqa: F401  (each registers its commands)
from .display import SIDE_BY_SIDE_WIDTH
from .group import main

__all__ = ["main", "SIDE_BY_SIDE_WIDTH"]
