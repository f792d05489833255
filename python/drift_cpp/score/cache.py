"""Persistent score cache: SQLite under the user cache directory.

A score is keyed by the model's identity and hashes of everything that shapes it,
so an interrupted run resumes where it stopped and repeated runs score nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

from ..errors import DriftError
from ..fileio import cache_dir

LOCK_TIMEOUT_S = 60


def score_key(model_fingerprint: str, template: str, max_response_tokens: int, system: str,
              conversation: list[dict], response: str) -> str:
    h = hashlib.sha256()
    for part in (model_fingerprint, template, str(max_response_tokens), system,
                 json.dumps(conversation, ensure_ascii=False, sort_keys=True), response):
        h.update(hashlib.sha256(part.encode("utf-8")).digest())
    return h.hexdigest()


class ScoreCache:
    """Every SQLite failure becomes one DriftError that says what is wrong with the file and how to fix it."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else cache_dir() / "scores.sqlite"
        directory = self.path.parent
        if directory.exists() and not directory.is_dir():
            raise DriftError(f"{directory}: the cache location is a file, not a directory; "
                             "set DRIFT_CPP_CACHE to a directory or run with --no-cache")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DriftError(f"{directory}: cannot create the cache directory ({e.strerror or e}); "
                             "set DRIFT_CPP_CACHE to a writable directory or run with --no-cache") from None
        if self.path.exists() and not self.path.is_file():
            raise DriftError(f"{self.path}: the score cache is not a regular file; "
                             "remove it or run with --no-cache")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise DriftError(f"{directory}: the cache directory is not writable; "
                             "set DRIFT_CPP_CACHE to a writable directory or run with --no-cache")
        self._db = None
        with self._errors():
            # Concurrent runs wait for each other's writes. One thread at a time uses it, but not always the one
            # that opened it: chat learns a pick in the background while the user types (steer/questions.Learner).
            self._db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, check_same_thread=False)
            self._setup()

    def _setup(self) -> None:
        """Switching a new file to WAL takes its lock without SQLite's busy wait, so two runs
        opening the same fresh cache can see "database is locked" at once: retry until the timeout."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, logprob REAL, n_tokens INTEGER)")
                self._db.execute("SELECT key, logprob, n_tokens FROM scores LIMIT 1").fetchall()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))

    @contextmanager
    def _errors(self):
        try:
            yield
        except sqlite3.DatabaseError as e:
            if self._db is not None:
                self._db.close()
                self._db = None
            raise DriftError(_explain(self.path, e)) from None

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[float, int]]:
        keys = list(keys)
        found = {}
        with self._errors():
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = self._db.execute(
                    f"SELECT key, logprob, n_tokens FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                found.update({k: (lp, n) for k, lp, n in rows})
        return found

    def put_many(self, entries: Iterable[tuple[str, float, int]]) -> dict[str, tuple[float, int]]:
        """Stores the entries and returns the scores now stored for their keys.

        The first score stored for a key stays: runs sharing a cache (even at the same time, whose
        batches may round differently) then all use the same numbers.
        """
        entries = list(entries)
        with self._errors(), self._db:  # one transaction: a chunk is stored whole or not at all
            self._db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?)", entries)
        return self.get_many(k for k, _, _ in entries)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class MemoryCache:
    """A score cache in memory, with ScoreCache's get_many and put_many: a worker of approximate-many
    starts from the scores the driver's cache holds and hands back the ones it computed (`new`)."""

    def __init__(self, entries: Optional[dict] = None):
        self.entries: dict[str, tuple[float, int]] = dict(entries or {})
        self.new: list[tuple[str, float, int]] = []

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[float, int]]:
        return {k: self.entries[k] for k in keys if k in self.entries}

    def put_many(self, entries: Iterable[tuple[str, float, int]]) -> dict[str, tuple[float, int]]:
        entries = list(entries)
        for k, lp, n in entries:
            if k not in self.entries:
                self.entries[k] = (lp, n)
                self.new.append((k, lp, n))
        return self.get_many(k for k, _, _ in entries)


def _explain(path: Path, e: sqlite3.DatabaseError) -> str:
    text = str(e)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return (f"{path}: cannot write the score cache ({text}); "
                "set DRIFT_CPP_CACHE to a writable directory or run with --no-cache")
    if "locked" in text or "busy" in text:
        return f"{path}: the score cache stayed locked by another drift-cpp run ({text}); try again"
    if "disk is full" in text or "disk I/O" in text:
        return f"{path}: cannot write the score cache ({text}); free some space or run with --no-cache"
    return f"{path}: the score cache is corrupt ({text}); delete it or run with --no-cache"
