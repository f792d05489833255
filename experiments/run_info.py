"""What every experiment records about its run, and how it reports progress and errors."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from drift_cpp.errors import DriftError

REPO = Path(__file__).resolve().parent.parent
# The files that decide a result; results files under docs/ change during a run and don't count.
CODE_PATHS = ("python", "csrc", "experiments", "CMakeLists.txt", "pyproject.toml")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_rev() -> str:
    """HEAD when the run starts, marked when the code differs from it."""
    rev = _git("rev-parse", "HEAD")
    if rev is None:
        return "unknown (not a git checkout)"
    if _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS):
        rev += " with uncommitted changes"
    return rev


def command_line(script: str, argv: Optional[list]) -> str:
    return shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", script, *argv])


def run(main: Callable[[], int]) -> None:
    """The script's entry point: a DriftError is a one-line message and exit status 1."""
    try:
        sys.exit(main())
    except DriftError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
