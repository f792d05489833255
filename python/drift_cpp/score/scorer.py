"""Zero-shot rewards: log π(y | x, s) of responses under system prompts, through the native scorer.

r_i(y|x) = log π(y|x,s_i) − log π(y|x,s_0)  (paper section 3.1, differential prompts).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, astuple, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..chat import as_messages
from ..errors import DriftError
from ..models import Model
from ..params import DEFAULT_MAX_RESPONSE_TOKENS, EngineOptions
from .cache import ScoreCache, score_key

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


@dataclass
class Cost:
    """What scoring took: tokens the sLM evaluated, seconds, items scored and items read from the cache."""
    tokens_evaluated: int = 0
    seconds: float = 0.0
    items_scored: int = 0
    items_cached: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple:
        return astuple(self)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"scored {self.items_scored} items ({self.items_cached} more from the cache): "
                f"{self.tokens_evaluated:,} tokens evaluated in {self.seconds:.1f} s")


def planned_tokens(work: Sequence[tuple[list, list]]) -> int:
    """Tokens the native scorer evaluates for (prompt, response) items in this order, from an empty
    context: as csrc/scorer.cpp does, it keeps the head of the previous prompt (all but its last 2
    tokens) and evaluates only what follows the prefix shared with it, never leaving one token alone."""
    total, cached = 0, []
    for prompt, response in work:
        head = len(prompt) - 2 if len(prompt) > 3 else 0
        keep = 0
        while keep < min(len(cached), head) and cached[keep] == prompt[keep]:
            keep += 1
        if head - keep == 1:
            keep -= 1
        total += len(prompt) - keep + len(response) - 1
        cached = prompt[:head]
    return total


def check_max_response_tokens(n: int) -> int:
    """0 means never truncate; a negative count would cut tokens off the end of every response."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise DriftError(f"max_response_tokens must be an integer >= 0 (0: never truncate), got {n!r}")
    return n


def request_key(model: Model, max_response_tokens: int, request: ScoreRequest) -> str:
    """The score cache's key of a request, scored by `model` with this truncation."""
    return score_key(model.identity["sha256"], model.template.name, max_response_tokens,
                     request.system, as_messages(request.conversation), request.response)


class Scorer:
    def __init__(self, model: Model, n_ctx: int = EngineOptions.n_ctx, n_batch: int = EngineOptions.n_batch,
                 cache: Optional[ScoreCache] = None, max_response_tokens: int = DEFAULT_MAX_RESPONSE_TOKENS,
                 progress: Optional[Callable[[str, int, int], Any]] = None):
        from ..runtime import _core

        check_max_response_tokens(max_response_tokens)
        self.model = model
        self.core = _core.Scorer(model.core, n_ctx=n_ctx, n_batch=n_batch, n_threads=model.options.n_threads)
        self.cache = cache
        self.max_response_tokens = max_response_tokens
        # progress(label, n_items, planned_tokens) -> a context manager with evaluated(tokens) and advance(items):
        # the CLI passes a progress bar; the Python API is silent by default.
        self.progress = progress
        self.cost = Cost()  # everything this scorer has scored so far

    @contextmanager
    def truncating(self, max_response_tokens: int):
        """Scores at this truncation inside the block: one scorer serves profiles recorded at different ones."""
        before, self.max_response_tokens = self.max_response_tokens, check_max_response_tokens(max_response_tokens)
        try:
            yield self
        finally:
            self.max_response_tokens = before

    def _messages(self, request: ScoreRequest) -> list[dict]:
        return [{"role": "system", "content": request.system}] + as_messages(request.conversation)

    def _key(self, request: ScoreRequest) -> str:
        return request_key(self.model, self.max_response_tokens, request)

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
        need = len(prompt) + len(response) - 1
        if need > self.core.n_ctx:
            over = need - self.core.n_ctx
            advice = f"shorten the prompt by at least {over} token{'s' * (over > 1)} (drop its oldest messages or text)"
            if len(response) > over:
                advice += " or the response" + ("" if self.max_response_tokens else
                                                 ", or score responses on their first tokens (--max-response-tokens)")
            raise DriftError(f"{request.label or 'item'}: the prompt ({len(prompt)} tokens with the system prompt) "
                             f"and the response ({len(response)} tokens) need {need} tokens, but the scorer's context "
                             f"holds {self.core.n_ctx}: {advice}")
        return prompt, response

    def check(self, requests: Sequence[ScoreRequest]) -> None:
        """Every request that scoring them would evaluate is valid and fits the context; nothing is scored."""
        self._plan(requests)

    def _plan(self, requests: Sequence[ScoreRequest]) -> tuple[list, list, dict, list]:
        """(unique requests, their cache keys, the scores the cache holds, the work left: (key, prompt tokens,
        response tokens) in prompt order, so that chunks share prefixes). Raises before anything is scored."""
        for r in requests:
            self._check(r)
        unique = list(dict.fromkeys(requests))
        keys = [self._key(r) for r in unique]
        done = self.cache.get_many(keys) if self.cache else {}
        prompt_texts: dict[tuple, str] = {}  # rendered once per prompt
        work = []
        for r, k in zip(unique, keys):
            if k in done:
                continue
            pk = (r.system, tuple(tuple(m.items()) for m in as_messages(r.conversation)))
            if pk not in prompt_texts:
                prompt_texts[pk] = self.model.render(self._messages(r))
            work.append((k, *self.tokens(r, prompt_texts[pk])))
        work.sort(key=lambda w: w[1])
        return unique, keys, done, work

    def score(self, requests: Sequence[ScoreRequest], what: str = "scoring") -> Scores:
        """Scores of every request; each unique one is evaluated once, and at most once ever with a cache."""
        start, tokens = time.monotonic(), self.core.stats["evaluated_tokens"]
        unique, keys, done, work = self._plan(requests)

        planned = planned_tokens([(p, t) for _, p, t in work])
        bar = self.progress(what, len(work), planned) if self.progress and work else None
        with bar or nullcontext():
            for i in range(0, len(work), CHUNK_ITEMS):
                chunk = work[i : i + CHUNK_ITEMS]
                results = self.core.score([(p, t) for _, p, t in chunk], False, bar.evaluated if bar else None)
                entries = [(k, lp, len(t)) for (k, _, t), (lp, _) in zip(chunk, results)]
                done.update(self.cache.put_many(entries) if self.cache else {k: (lp, n) for k, lp, n in entries})
                if bar:
                    bar.advance(len(chunk))

        self.cost += Cost(self.core.stats["evaluated_tokens"] - tokens, time.monotonic() - start,
                          len(work), len(unique) - len(work))
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
