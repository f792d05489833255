"""Persistent score cache: SQLite under the user cache directory.

A score is keyed by the model's identity and hashes of everything that shapes it,
so an interrupted run resumes where it stopped and repeated runs score nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable, Optional

from .models import cache_dir


def score_key(model_fingerprint: str, template: str, max_response_tokens: int, system: str,
              conversation: list[dict], response: str) -> str:
    h = hashlib.sha256()
    for part in (model_fingerprint, template, str(max_response_tokens), system,
                 json.dumps(conversation, ensure_ascii=False, sort_keys=True), response):
        h.update(hashlib.sha256(part.encode("utf-8")).digest())
    return h.hexdigest()


class ScoreCache:
    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else cache_dir() / "scores.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, logprob REAL, n_tokens INTEGER)")

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[float, int]]:
        keys = list(keys)
        found = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, logprob, n_tokens FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({k: (lp, n) for k, lp, n in rows})
        return found

    def put_many(self, entries: Iterable[tuple[str, float, int]]) -> None:
        with self._db:  # one transaction: a chunk is stored whole or not at all
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", list(entries))

    def close(self) -> None:
        self._db.close()
