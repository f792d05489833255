"""A progress bar for long scoring runs, as the CLI and the experiments show it (the scorer takes any factory)."""

from __future__ import annotations

import sys
import time
from typing import Optional

import click


class TokenProgress:
    """A click progress bar over items, with tokens/s and the ETA.

    The ETA comes from tokens, not items: items differ in length, and the tokens still to
    evaluate are known in advance (planned_tokens)."""

    def __init__(self, label: str, n_items: int, planned: int):
        self.start = time.monotonic()
        self.base = None  # the scorer's token count when this bar started
        self.rate = 0.0
        self.planned, self.done = planned, 0
        self.bar = click.progressbar(length=n_items, label=label, show_eta=False, show_pos=True,
                                     file=sys.stderr, item_show_func=lambda _: self.status())

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def evaluated(self, tokens_so_far: int) -> None:
        """Called by the native scorer after each llama_decode."""
        if self.base is None:
            self.base = tokens_so_far
            self.start = time.monotonic()
        self.done = tokens_so_far - self.base
        self.rate = self.done / max(time.monotonic() - self.start, 1e-9)
        self.bar.render_progress()

    def eta_seconds(self) -> Optional[float]:
        if self.rate <= 0:
            return None
        return max(self.planned - self.done, 0) / self.rate

    def status(self) -> str:
        eta = self.eta_seconds()
        if eta is None:
            return f"{self.planned:,} tokens to evaluate"
        return f"{self.rate:.0f} tok/s, ETA {int(eta) // 60}:{int(eta) % 60:02d}"

    def advance(self, n_items: int) -> None:
        self.bar.update(n_items)
