"""The app of `drift-cpp serve`: an OpenAI-compatible HTTP server that personalizes each end user's answers.

The profile is chosen by OpenAI's own per-end-user field `user`: DIR/<user>.json; a user without
one (or one learned from fewer than MIN_PROFILE_PAIRS pairs) gets plain decoding. POST
/v1/preferences teaches a profile: the pairs go to DIR/<user>.pairs.jsonl and only they are scored.

Concurrency: requests are batched (batching.Batcher): each runs in a slot of its own, with its own
KV caches, and one llama_decode per model per step advances all the slots of a batch. A request
takes its formula, so a snapshot of its user's profile, when it arrives: a profile updated
meanwhile steers the requests that come after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..fit import learning
from ..score.attributes import AttributeSet
from ..steer.batching import Batcher, Job
from ..steer.binding import Binding, check_sampling_for
from ..steer.session import check_history
from ..errors import DriftError
from ..steer.formula import LLM, SLM, Formula
from ..steer.build import drift_formula
from ..fileio import cache_dir
from ..params import DEFAULT_BETA, Sampling, check_beta
from ..preferences import pair_from
from ..fit.profile import Profile
from ..score.scorer import Scorer

from .types import ApiError, ChatRequest, PreferenceItem

log = logging.getLogger("drift_cpp.server")
DISCONNECT_POLL_S = 0.1  # how often a request answered in one piece checks that its client is still there
# OpenAI's user field is free text; here it names a file, so it is held to a plain name.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

class Server:
    """What the endpoints share: the batcher, the profiles directory and the scorer that learns."""

    def __init__(self, *, profiles: Path, batcher: Batcher, make_scorer: Callable[[], Scorer],
                 attributes: AttributeSet, system: Optional[str] = None, beta: float = DEFAULT_BETA,
                 top_attributes: Optional[int] = None, api_key: Optional[str] = None):
        if not profiles.is_dir():
            raise DriftError(f"--profiles {profiles}: not a directory")
        self.profiles, self.attributes, self.system = profiles, attributes, system
        self.beta, self.top_attributes, self.api_key = check_beta(beta), top_attributes, api_key
        self.batcher = batcher
        self.batcher.lane(Formula.plain(system))  # plain decoding's engine, made now: errors before serving
        self.model_id = Path(batcher.llm.identity["name"]).stem
        # One thread scores and writes the profiles: the scorer and its SQLite cache stay on it.
        self._learner = ThreadPoolExecutor(1, thread_name_prefix="drift-cpp-learn")
        self._scorer = self._learner.submit(make_scorer).result()
        self._profiles: dict[Path, tuple[tuple, Profile]] = {}  # parsed profiles by (mtime, size)

    def profile_path(self, user: str, param: str = "user") -> Path:
        if not USER_NAME.fullmatch(user) or ".." in user:
            raise ApiError(400, f"invalid user name {user!r}: letters, digits and _ . @ - only, 64 at most, "
                                "not starting with a symbol", param)
        path = self.profiles / f"{user}.json"
        if path.resolve().parent != self.profiles.resolve():  # a symlinked name must not lead out either
            raise ApiError(400, f"invalid user name {user!r}", param)
        return path

    def profile(self, user: str) -> Optional[Profile]:
        path = self.profile_path(user)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._profiles.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, Profile.load(path))
            self._profiles[path] = cached
        return cached[1]

    def formula(self, request: ChatRequest) -> Formula:
        beta = self.beta if request.beta is None else request.beta
        try:
            beta = check_beta(beta)
        except DriftError as e:
            raise ApiError(400, str(e), "beta") from None
        profile = None if request.user is None else self.profile(request.user)
        if not learning.steers(profile):
            return Formula.plain(self.system, beta)
        formula = drift_formula(self.system, [(profile, 1.0)], beta, self.top_attributes)
        if request.plausibility is None and request.max_kl is None:
            return formula
        try:
            return formula.with_guard(formula.plausibility if request.plausibility is None else request.plausibility,
                                      formula.max_kl if request.max_kl is None else request.max_kl)
        except DriftError as e:
            raise ApiError(400, str(e), "plausibility" if "plausibility" in str(e) else "max_kl") from None

    async def generate(self, formula: Formula, messages: list[dict], samplings: list[Sampling],
                       on_piece: Optional[Callable[[int, str], None]] = None) -> list[Job]:
        """The jobs of a request's choices (one per sampling, decoded in one batch), once all are done;
        on_piece gets a choice's index and text. Leaving (a cancelled await) stops them within one token."""
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in samplings]
        jobs = [Job(formula, messages, sampling, None if on_piece is None else partial(on_piece, i),
                    partial(_call, loop, _resolve, future)) for i, (sampling, future) in enumerate(zip(samplings, done))]
        self.batcher.submit(*jobs)
        try:
            await asyncio.gather(*done)
        finally:
            for job in jobs:
                job.cancel.set()
        for job in jobs:
            if job.error is not None:
                raise job.error
        return jobs

    async def learn(self, items: list[PreferenceItem]) -> list[dict]:
        return await asyncio.wrap_future(self._learner.submit(self._learn, items))

    def _learn(self, items: list[PreferenceItem]) -> list[dict]:
        by_user: dict[str, list] = {}
        for i, item in enumerate(items):
            at = "body" if len(items) == 1 else f"body[{i}]"
            self.profile_path(item.user, f"{at}.user")
            record = item.model_dump(exclude={"user"}, exclude_none=True)
            by_user.setdefault(item.user, []).append(pair_from(record, at))
        # Every user's pairs are scored before any file is written: a list is applied whole or not at all.
        updates = learning.add_many([(self.profile_path(user), pairs) for user, pairs in by_user.items()],
                                    self._scorer, self.attributes)
        return [{"user": user, "added": update.changed, "n_pairs": update.profile.n_pairs,
                 "steering": learning.steers(update.profile),
                 "top_attributes": [{"id": a, "weight": w} for a, w in update.after],
                 "before": [{"id": a, "weight": w} for a, w in update.before]}
                for user, update in zip(by_user, updates)]


def _call(loop: asyncio.AbstractEventLoop, f: Callable, *args) -> None:
    """f(*args) on the event loop, from the lane's thread; nothing if the loop has closed."""
    try:
        loop.call_soon_threadsafe(f, *args)
    except RuntimeError:
        pass


def _arrived(server: Server, request: Request) -> None:
    """The request is about to be submitted, or has failed: no longer announced (once)."""
    if getattr(request.state, "announced", False):
        request.state.announced = False
        server.batcher.announce(-1)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # a request whose client left is cancelled already
        future.set_result(None)


def _now() -> int:
    return int(time.time())


class Gate:
    """Checks the API key and the body's size, and announces a chat request to the batcher from its
    headers on, so that requests sent together are batched together. Plain ASGI: Starlette's
    BaseHTTPMiddleware would hide a client's disconnect from the endpoint, which must stop the
    generation then."""

    def __init__(self, app, server: Server, max_body: int):
        self.app, self.server, self.max_body = app, server, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        key = self.server.api_key
        if key is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # The scheme is case-insensitive (RFC 7235), the key is not.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
                return await ApiError(401, "invalid API key", code="invalid_api_key").response()(scope, receive, send)
        too_large = f"the request body is over this server's limit of {self.max_body} bytes (--max-body-bytes)"
        if int(request.headers.get("content-length", 0)) > self.max_body:  # refused before a byte of it is read
            return await ApiError(413, too_large, code="request_too_large").response()(scope, receive, send)
        received = 0

        async def counted():  # a chunked body has no length to check: counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:  # FastAPI answers an HTTPException raised while it reads the body
                raise HTTPException(413, too_large)
            return message

        if scope["path"] != "/v1/chat/completions":
            return await self.app(scope, counted, send)
        request.state.announced = True  # in the scope: the endpoint's request sees it
        self.server.batcher.announce(1)
        try:
            await self.app(scope, counted, send)
        finally:
            _arrived(self.server, request)


def _without_paths(server: Server) -> Callable[[str], str]:
    """A message with the server's files named relative to their folders (the profiles, the cache,
    the models'), as in 'alice.json: ...': where the server keeps them is not the client's business."""
    folders = {server.profiles, cache_dir(), *(m.path.parent for m in server.batcher.models)}
    prefixes = sorted({f"{p}/" for d in folders for p in (d, d.resolve())}, key=len, reverse=True)

    def public(message: str) -> str:
        for prefix in prefixes:
            message = message.replace(prefix, "")
        return " ".join(message.split())
    return public


def create_app(server: Server, max_body: int) -> FastAPI:
    app = FastAPI(title="drift-cpp", docs_url=None, redoc_url=None, openapi_url=None)
    public = _without_paths(server)

    app.add_middleware(Gate, server=server, max_body=max_body)

    @app.exception_handler(ApiError)
    async def api_error(_request, e: ApiError):
        e.message = public(e.message)
        return e.response()

    @app.exception_handler(DriftError)
    async def drift_error(_request, e: DriftError):
        return ApiError(400, public(str(e))).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, e: RequestValidationError):
        # A union (one pick or a list of them) fails in each of its types: the deepest error is the one
        # of the type the body has; the types' names (PreferenceItem, list[...]) are no field of it.
        first = max(e.errors(), key=lambda error: len(error["loc"]))
        if first["type"] == "json_invalid":
            return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}").response()
        where = ".".join(str(x) for x in first["loc"][1:] if not (isinstance(x, str) and (x[:1].isupper() or "[" in x)))
        return ApiError(400, f"{where or 'body'}: {first['msg']}", where or None).response()

    @app.exception_handler(HTTPException)
    async def http_error(_request, e: HTTPException):
        code = {404: "not_found", 413: "request_too_large"}.get(e.status_code)
        return ApiError(e.status_code, str(e.detail), code=code).response()

    @app.exception_handler(Exception)
    async def internal(_request, e: Exception):
        log.error("internal error: %s: %s", type(e).__name__, e)
        return ApiError(500, f"internal error ({type(e).__name__}); please report it", kind="server_error").response()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.model_id, "object": "model", "created": 0,
                                            "owned_by": "drift-cpp"}]}

    @app.get("/slots")
    async def slots():
        return server.batcher.state()

    @app.get("/v1/profiles/{user}")
    async def profile(user: str):
        prof = server.profile(user)
        if prof is None:
            raise ApiError(404, f"no profile for user {user!r}", "user", "profile_not_found")
        return {"user": user, "object": "profile", "steering": learning.steers(prof), **learning.report(prof)}

    @app.post("/v1/preferences")
    async def preferences(body: Union[PreferenceItem, list[PreferenceItem]]):
        items = body if isinstance(body, list) else [body]
        if not items:
            raise ApiError(400, "body: an empty list of preferences", "body")
        return {"object": "list", "data": await server.learn(items)}

    @app.post("/v1/chat/completions")
    async def completions(request: ChatRequest, http: Request):
        unsupported = request.unsupported()
        if unsupported is not None:
            raise ApiError(400, f"Unsupported parameter: '{unsupported}' is not supported by drift-cpp",
                           unsupported, "unsupported_parameter")
        if request.model != server.model_id:
            raise ApiError(404, f"The model '{request.model}' does not exist (this server has '{server.model_id}')",
                           "model", "model_not_found")
        n = 1 if request.n is None else request.n
        if not 1 <= n <= server.batcher.slots:  # a request's choices are decoded in one batch
            raise ApiError(400, f"n must be in [1, {server.batcher.slots}] (this server's --slots), got {n}", "n")
        try:
            sampling = request.sampling()
            check_sampling_for(server.batcher.llm, sampling)  # the logit_bias's tokens, the grammar
        except DriftError as e:
            raise ApiError(400, str(e), "logit_bias" if str(e).startswith("logit_bias") else None) from None
        # Choice i samples with seed + i: n answers, each reproducible.
        samplings = [replace(sampling, seed=(sampling.seed + i) % 2**32) for i in range(n)]
        formula = await asyncio.to_thread(server.formula, request)  # may read and check a large profile file
        messages = [m.model_dump(include={"role", "content"}) for m in request.messages]
        check_history(messages)
        server.batcher.lane(formula)  # its models checked, its engine made: errors before the stream starts
        _arrived(server, http)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": _now(), "model": server.model_id}
        if not request.stream:
            jobs = await _unless_left(http, server.generate(formula, messages, samplings))
            if jobs is None:
                return Response(status_code=499)  # nobody reads it: the client closed the request
            return {**head, "object": "chat.completion",
                    "choices": [{"index": i, "message": {"role": "assistant", "content": job.result.text},
                                 "finish_reason": job.result.finish_reason} for i, job in enumerate(jobs)],
                    "usage": _usage(jobs)}
        await asyncio.to_thread(_check_context, server, formula, messages)
        usage = bool(request.stream_options and request.stream_options.include_usage)
        return StreamingResponse(_stream(server, head, formula, messages, samplings, usage, public),
                                 media_type="text/event-stream")

    return app


def _check_context(server: Server, formula: Formula, messages: list[dict]) -> None:
    """A prompt over the context is refused before a stream starts (its lane would find it only
    after the 200 was sent). Tokenizes as the lane will: call it off the event loop."""
    batcher = server.batcher
    n_ctx = batcher.engine_options.n_ctx  # what its lanes' engines are made with
    for sequence in Binding(formula, {LLM: batcher.llm, SLM: batcher.slm}, batcher.models).sequences:
        n = len(sequence.prompt(messages))
        if n >= n_ctx:
            raise ApiError(400, f"the prompt has {n} tokens but the context holds {n_ctx}: shorten the messages, "
                                "or serve with a larger --n-ctx", "messages", "context_length_exceeded")


async def _unless_left(http: Request, work: Awaitable):
    """work's result, or None once the client has left: then work is cancelled. Uvicorn stops a
    streamed response whose client leaves, but not a handler still awaiting its answer."""
    task = asyncio.ensure_future(work)
    while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
        if await http.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
    return task.result()


def _usage(jobs: list[Job]) -> dict:
    """OpenAI's usage: the prompt counted once, the tokens of every choice."""
    completion = sum(len(job.result.tokens) for job in jobs)
    prompt = jobs[0].prompt_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunk(head: dict, choices: list[dict], usage: Union[bool, dict] = False) -> str:
    """One event; with stream_options.include_usage every chunk has a usage, null but in the last."""
    body = {**head, "object": "chat.completion.chunk", "choices": choices,
            **({} if usage is False else {"usage": None if usage is True else usage})}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(server: Server, head: dict, formula: Formula, messages: list[dict], samplings: list[Sampling],
                  usage: bool, public: Callable[[str], str]):
    """Server-sent events as OpenAI streams them. However the stream ends (a client that leaves
    closes this generator), the jobs are cancelled, and the engine stops them before their next token."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    generation = asyncio.ensure_future(server.generate(formula, messages, samplings,
                                                       lambda i, text: _call(loop, pieces.put_nowait, (i, text))))
    generation.add_done_callback(lambda _: pieces.put_nowait(None))
    try:
        for i in range(len(samplings)):
            yield _chunk(head, [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                         usage)
        while (piece := await pieces.get()) is not None:
            yield _chunk(head, [{"index": piece[0], "delta": {"content": piece[1]}, "finish_reason": None}], usage)
        try:
            jobs = generation.result()
        except Exception as e:  # noqa: BLE001  (the stream has begun: an error event, as OpenAI sends)
            message = public(str(e)) if isinstance(e, DriftError) else \
                f"internal error ({type(e).__name__}); please report it"
            yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
        else:
            for i, job in enumerate(jobs):
                yield _chunk(head, [{"index": i, "delta": {}, "finish_reason": job.result.finish_reason}], usage)
            if usage:
                yield _chunk(head, [], _usage(jobs))
        yield "data: [DONE]\n\n"
    finally:
        generation.cancel()  # which cancels the job


def serve(server: Server, host: str, port: int, max_body: int) -> None:
    import uvicorn
    app = create_app(server, max_body)
    log.warning("drift-cpp serving %s on http://%s:%d/v1", server.model_id, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
