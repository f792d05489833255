"""What every experiment records about its run, and how it reports progress and errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text

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


def write_results(out: Path, results: dict, markdown: str) -> None:
    """An experiment's results.json and results.md in `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", markdown)


def run(main: Callable[[], int]) -> None:
    """The script's entry point: a DriftError is a one-line message and exit status 1."""
    try:
        sys.exit(main())
    except DriftError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
