"""Zero-shot rewards: log π(y | x, s) of responses under system prompts, through the native scorer.

r_i(y|x) = log π(y|x,s_i) − log π(y|x,s_0)  (paper section 3.1, differential prompts).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import click
import numpy as np

from .chat import as_messages
from .errors import DriftError
from .models import Model
from .params import EngineOptions
from .score_cache import ScoreCache, score_key

CHUNK_ITEMS = 16  # items scored between two cache writes


@dataclass(frozen=True)
class ScoreRequest:
    system: str
    conversation: tuple  # messages before the response: (role, content) pairs or Message objects
    response: str
    label: str = field(default="", compare=False)  # names the item in errors, e.g. "prefs.jsonl:17"


@dataclass
class Scores:
    logprob: np.ndarray   # summed log-probability of each response
    n_tokens: np.ndarray  # scored tokens of each response


def check_max_response_tokens(n: int) -> int:
    """0 means never truncate; a negative count would cut tokens off the end of every response."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise DriftError(f"max_response_tokens must be an integer >= 0 (0: never truncate), got {n!r}")
    return n


class Scorer:
    def __init__(self, model: Model, n_ctx: int = EngineOptions.n_ctx, n_batch: int = EngineOptions.n_batch,
                 cache: Optional[ScoreCache] = None, max_response_tokens: int = 0, progress: bool = True):
        from .runtime import _core

        check_max_response_tokens(max_response_tokens)
        self.model = model
        self.core = _core.Scorer(model.core, n_ctx=n_ctx, n_batch=n_batch, n_threads=model.options.n_threads)
        self.cache = cache
        self.max_response_tokens = max_response_tokens
        self.progress = progress

    def _messages(self, request: ScoreRequest) -> list[dict]:
        return [{"role": "system", "content": request.system}] + as_messages(request.conversation)

    def _key(self, request: ScoreRequest) -> str:
        return score_key(self.model.identity["sha256"], self.model.template.name, self.max_response_tokens,
                         request.system, as_messages(request.conversation), request.response)

    def _check(self, request: ScoreRequest) -> None:
        where = request.label or "item"
        if not request.system.strip():
            raise DriftError(f"{where}: empty system prompt")
        if not request.response.strip():
            raise DriftError(f"{where}: empty response")
        for text in [request.system, request.response] + [m["content"] for m in as_messages(request.conversation)]:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise DriftError(f"{where}: text is not valid UTF-8") from None

    def tokens(self, request: ScoreRequest, prompt_text: str) -> tuple[list[int], list[int]]:
        prompt, response = self.model.split_response(prompt_text, request.response)
        if self.max_response_tokens and len(response) > self.max_response_tokens:
            response = response[: self.max_response_tokens]
        if len(prompt) + len(response) - 1 > self.core.n_ctx:
            raise DriftError(
                f"{request.label or 'item'}: prompt and response need {len(prompt) + len(response) - 1} tokens but "
                f"the context holds {self.core.n_ctx}; set max_response_tokens (--max-response-tokens) to truncate"
            )
        return prompt, response

    def score(self, requests: Sequence[ScoreRequest], what: str = "scoring") -> Scores:
        """Scores of every request; each unique one is evaluated once, and at most once ever with a cache."""
        for r in requests:
            self._check(r)
        unique = list(dict.fromkeys(requests))
        keys = [self._key(r) for r in unique]
        done = self.cache.get_many(keys) if self.cache else {}
        todo = [(r, k) for r, k in zip(unique, keys) if k not in done]

        # Tokenize once per prompt, then score in prompt order so chunks share prefixes.
        prompt_texts: dict[tuple, str] = {}
        work = []
        for r, k in todo:
            pk = (r.system, tuple(tuple(m.items()) for m in as_messages(r.conversation)))
            if pk not in prompt_texts:
                prompt_texts[pk] = self.model.render(self._messages(r))
            work.append((k, *self.tokens(r, prompt_texts[pk])))
        work.sort(key=lambda w: w[1])

        with _Progress(what, len(work), enabled=self.progress and bool(work)) as bar:
            for i in range(0, len(work), CHUNK_ITEMS):
                chunk = work[i : i + CHUNK_ITEMS]
                results = self.core.score([(p, t) for _, p, t in chunk], False, bar.evaluated)
                entries = [(k, lp, len(t)) for (k, _, t), (lp, _) in zip(chunk, results)]
                done.update(self.cache.put_many(entries) if self.cache else {k: (lp, n) for k, lp, n in entries})
                bar.advance(len(chunk))

        by_request = {r: done[k] for r, k in zip(unique, keys)}
        return Scores(
            logprob=np.array([by_request[r][0] for r in requests], dtype=np.float64),
            n_tokens=np.array([by_request[r][1] for r in requests], dtype=np.int64),
        )

    def token_logprobs(self, request: ScoreRequest) -> tuple[list[int], np.ndarray]:
        """The response's tokens and the log-probability of each (no cache)."""
        self._check(request)
        prompt, response = self.tokens(request, self.model.render(self._messages(request)))
        (_, per_token), = self.core.score([(prompt, response)], True)
        return response, per_token


class _Progress:
    """A click progress bar over items, with tokens/s and the ETA."""

    def __init__(self, label: str, n_items: int, enabled: bool):
        self.enabled = enabled
        self.start = time.monotonic()
        self.base = None  # the scorer's token count when this bar started
        self.rate = 0.0
        if enabled:
            self.bar = click.progressbar(length=n_items, label=label, show_eta=True, show_pos=True,
                                         file=sys.stderr,
                                         item_show_func=lambda _: f"{self.rate:.0f} tok/s")

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def evaluated(self, tokens_so_far: int) -> None:
        """Called by the native scorer after each llama_decode."""
        if self.base is None:
            self.base = tokens_so_far
            self.start = time.monotonic()
        self.rate = (tokens_so_far - self.base) / max(time.monotonic() - self.start, 1e-9)
        if self.enabled:
            self.bar.render_progress()

    def advance(self, n_items: int) -> None:
        if self.enabled:
            self.bar.update(n_items)
