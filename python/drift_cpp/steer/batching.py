"""Several requests served at once: one llama_decode per model per step advances all of them.

llama-server serves its slots this way; here the native engine does it. A slot runs one request:
its sequences are the request's formula's (model, system prompt) pairs, and Engine.generate runs
the slots of a batch side by side, each with its own coefficients and sampling. The model of each
sequence (a slot's layout) is fixed when an engine is made, so there is one engine per layout (a
lane), each with its slots and its scheduler thread. Prompts and coefficients come with each
request, so any formula of that layout, any user's, runs in any of the lane's slots. A slot's KV
caches are emptied before each request (Engine.forget): a prompt partly reused from a cache reads
differently, in this llama.cpp's rounding, from the whole prompt, and a request must get the same
answer whichever slot it lands in and whatever ran there before.

Batches are static: a request that arrives while its lane runs a batch waits for the batch to
end; a request's n choices are queued as one group, decoded in one batch. A batch starts once no
request has joined it for `quiet` seconds and none is announced (`Batcher.announce`: the server
announces a request as soon as it reads its headers), at most `window` after its first request; so
requests sent together are decoded together, and a lone one waits only `quiet`.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .binding import Binding, check_history, check_sampling_for, native_sampling
from .session import Generation
from ..errors import DriftError
from .formula import LLM, SLM, Formula
from ..models import Model
from ..params import EngineOptions, Sampling
from ..runtime import _core

QUIET_S = 0.005   # a burst of requests arrives within this of each other
WINDOW_S = 0.05   # the longest a first request waits for others
POLL_S = 0.001    # how often a lane waiting for announced requests looks again
DEFAULT_SLOTS = 4  # per lane; each slot holds n_ctx KV cells per sequence


@dataclass
class Job:
    """One request: what to generate, where its pieces go, and what came of it."""
    formula: Formula
    history: list[dict]
    sampling: Sampling
    on_piece: Optional[Callable[[str], None]] = None  # called on the lane's thread: must not block
    on_done: Optional[Callable[[], None]] = None       # likewise, once result or error is set
    cancel: threading.Event = field(default_factory=threading.Event)
    result: Optional[Generation] = None
    prompt_tokens: int = 0
    error: Optional[BaseException] = None
    done: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)


class _Lane:
    """One engine whose slots all have one layout, and the thread that runs its batches."""

    def __init__(self, name: str, layout: list[int], announced: Callable[[], int], models: list[Model], n_slots: int,
                 options: EngineOptions, n_threads: int, quiet: float, window: float):
        self.name, self.announced, self.models, self.quiet, self.window = name, announced, models, quiet, window
        self.engine = _core.Engine([m.core for m in models], [layout] * n_slots, n_ctx=options.n_ctx,
                                   n_batch=options.n_batch, n_threads=n_threads)
        self.state = [{"busy": False, "last": {}} for _ in range(n_slots)]
        self.batches: collections.Counter[int] = collections.Counter()  # batches run, by their size
        self.queue: collections.deque[list[Job]] = collections.deque()  # groups, each run in one batch
        self.cond = threading.Condition()
        threading.Thread(target=self._serve, name=f"drift-cpp-{name}", daemon=True).start()

    def submit(self, jobs: list[Job]) -> None:
        with self.cond:
            self.queue.append(jobs)
            self.cond.notify_all()

    def _next_batch(self) -> list[Job]:
        n = len(self.state)
        with self.cond:
            while not self.queue:
                self.cond.wait()
            deadline = self.queue[0][0].arrived + self.window
            while sum(map(len, self.queue)) < n:
                now = time.monotonic()
                until = deadline if self.announced() else min(self.queue[-1][0].arrived + self.quiet, deadline)
                if until <= now:
                    break
                self.cond.wait(min(until - now, POLL_S))
            batch: list[Job] = []
            while self.queue and len(batch) + len(self.queue[0]) <= n:
                batch += self.queue.popleft()
            return batch

    def _serve(self) -> None:
        while True:
            jobs = self._next_batch()
            for job in [j for j in jobs if j.cancel.is_set()]:  # its client left while it waited
                _finish(job, result=Generation("", "interrupted", [], 0.0))
            self._run([j for j in jobs if not j.cancel.is_set()])

    def _run(self, jobs: list[Job]) -> None:
        ready = {}
        for slot, job in enumerate(jobs):  # every slot is free between batches, and forgotten before use
            try:  # one request's error (a prompt beyond n_ctx) is its own, not the batch's
                bound = Binding(job.formula, {LLM: self.models[0], SLM: self.models[-1]}, self.models)
                prompts = bound.prompts(job.history)
                self.engine.forget(slot)  # a request's answer must not depend on what its slot held
                self.engine.sync(slot, prompts)
            except Exception as e:  # noqa: BLE001  (raised again in the request's thread)
                _finish(job, error=e)
                continue
            job.prompt_tokens = len(prompts[0])
            self.state[slot] = {"busy": True, "last": {}}
            ready[slot] = (job, bound)
        if not ready:
            return

        def piece(slot: int, text: str) -> bool:  # the engine's callback, after every token of a slot
            job = ready[slot][0]
            if text and job.on_piece is not None:
                job.on_piece(text)
            return not job.cancel.is_set()

        slots = list(ready)
        self.batches[len(slots)] += 1
        try:
            results = self.engine.generate(slots, [ready[s][1].steering() for s in slots],
                                           [native_sampling(ready[s][0].sampling) for s in slots], piece)
        except Exception as e:  # noqa: BLE001
            for slot, (job, _) in ready.items():
                self.state[slot] = {"busy": False, "last": {"error": type(e).__name__}}
                _finish(job, error=e)
            return
        for slot, r in zip(slots, results):
            job = ready[slot][0]
            self.state[slot] = {"busy": False, "last": {"finish_reason": r["finish_reason"],
                                                        "completion_tokens": len(r["tokens"])}}
            _finish(job, result=Generation(r["text"], r["finish_reason"], r["tokens"], r["seconds"],
                                           weights=list(job.formula.steering)))


def _finish(job: Job, result: Optional[Generation] = None, error: Optional[BaseException] = None) -> None:
    job.result, job.error = result, error
    job.done.set()
    if job.on_done is not None:
        job.on_done()


class Batcher:
    """Requests of any formulas over one LLM and one sLM, batched per lane; thread-safe."""

    def __init__(self, llm: Model, slm: Model, options: EngineOptions = EngineOptions(), n_threads: int = 1,
                 slots: int = DEFAULT_SLOTS, quiet: float = QUIET_S, window: float = WINDOW_S):
        options.check()
        if slots < 1:
            raise DriftError(f"slots must be at least 1, got {slots}")
        self.llm, self.slm, self.slots, self.engine_options = llm, slm, slots, options
        self.models = [llm] + ([slm] if slm is not llm else [])
        self._args = (self.models, slots, options, n_threads, quiet, window)
        self._lanes: dict[tuple, _Lane] = {}
        self._lock = threading.Lock()
        self._announced = 0

    def announce(self, n: int) -> None:
        """n requests on their way (-n: submitted, or gone): lanes wait for them, up to their window."""
        with self._lock:
            self._announced += n

    def lane(self, formula: Formula) -> _Lane:
        """The lane of the formula's layout, made on first use."""
        layout = Binding(formula, {LLM: self.llm, SLM: self.slm}, self.models).layout
        with self._lock:
            if tuple(layout) not in self._lanes:
                name = f"lane{len(self._lanes)}-{len(layout)}seq"
                self._lanes[tuple(layout)] = _Lane(name, layout, lambda: self._announced, *self._args)
            return self._lanes[tuple(layout)]

    def submit(self, job: Job, *siblings: Job) -> Job:
        """Queues the job; siblings (a request's other choices, of the same formula) run in its batch."""
        jobs = [job, *siblings]
        if len(jobs) > self.slots:
            raise DriftError(f"{len(jobs)} answers cannot run in one batch of {self.slots} slots (serve --slots)")
        for j in jobs:  # bad values fail here, not in the lane's batch
            check_sampling_for(self.llm, j.sampling)
            check_history(j.history)
        if any(j.formula != job.formula for j in siblings):
            raise DriftError("the answers of one batch must share their formula")
        self.lane(job.formula).submit(jobs)
        return job

    def generate(self, job: Job) -> Generation:
        """Submits the job and waits for its answer (job.cancel stops it within one token)."""
        self.submit(job).done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def state(self) -> list[dict]:
        with self._lock:
            lanes = list(self._lanes.values())
        return [{"lane": lane.name, "batches": dict(lane.batches),
                 "slots": [{"slot": i, **s} for i, s in enumerate(lane.state)]} for lane in lanes]
