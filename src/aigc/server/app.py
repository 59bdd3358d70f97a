"""The HTTP server: a FastAPI app over one :class:`~aigc.engine.Engine` and one workspace.

    app = create_app(workspace, Settings(max_batch=16))   # uvicorn.run(app, host="127.0.0.1")

Routers: ``routers/openai.py`` (``/v1``: models, completions, chat completions, images),
``routers/native.py`` (``/api``: runs, datasets, generate as NDJSON, generations, feedback) and
``routers/studio.py`` (the web page at ``/``). This module wires them with what every route
shares: the lifespan (engine start and stop, ``/health`` 503 until ready), errors in OpenAI's
envelope ``{"error": {"message", "type", "param", "code"}}``, API keys, the body-size limit,
CORS and the Prometheus ``/metrics``.

The server is a thin layer: what a request means is decided by the engine and the core.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from aigc import keys
from aigc.errors import (AigcError, AlreadyExists, ArtifactStoreError, ContentBlocked, DeadlineExceeded,
                         EngineUnavailable, NotFound, Overloaded, Unauthorized)
from aigc.runtime import default_memory_limit
from aigc.server.common import printable
from aigc.server.metrics import ServerMetrics
from aigc.workspace import Workspace

log = logging.getLogger("aigc.server")

OPEN_PATHS = ("/health",)  # never need a key
PAGE_PATHS = ("/", "/favicon.ico")  # the studio's static shell: it asks for the key itself


@dataclass
class Settings:
    log: bool = True  # write every generation to the catalog
    max_batch: int = 16  # rows decoded together per text run; also the largest n
    max_queue: int = 32  # requests waiting beyond the running batches; more get 429
    # bytes of loaded runs before the least recently used idle one goes: half the machine's memory
    memory_limit: int = field(default_factory=default_memory_limit)
    keep_alive: float = 300.0  # seconds a run stays loaded after its last request (< 0: forever)
    prefix_cache_tokens: int = 8192  # prompt-prefix tokens cached per loaded text run for reuse (0: off)
    timeout: float = 600.0  # default per-request deadline, seconds
    max_tokens: int = 2048  # cap on max_tokens / num_predict
    default_max_tokens: int = 256  # chat and native generate when the request gives none
    max_prompt_chars: int = 16_000
    max_body_bytes: int = 1 << 20
    max_images: int = 16  # images per request
    cors_origins: list[str] = field(default_factory=list)
    preload: list[str] = field(default_factory=list)  # runs to load before /health says ready
    device: str | None = None
    threads: int | None = None  # torch threads of each engine worker; default: all cores but one
    # run the engine in a child process (aigc.engine_process: the model then never waits on the
    # GIL for the HTTP side); `aigc serve` does, an app embedded in a test or a program need not
    engine_process: bool = False
    # with engine_process on a CPU: the decode loop gets a core of its own and this process the
    # others (aigc.runtime.CpuPlan); `aigc serve` does, an app embedded in a program need not
    cpu_bind: bool = False
    # the workspace's safety layer on every text request (rails, redacted log, audit); off only to
    # measure its cost (benchmarks/serve_load.py --safety off)
    safety: bool = True


# -- errors -----------------------------------------------------------------------------------

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 408: "timeout_error", 409: "conflict_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": printable(message), "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": printable(param), "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(error: AigcError) -> tuple[int, str | None]:
    if isinstance(error, EngineUnavailable):  # ours: no Retry-After, retrying cannot help
        return 503, "engine_unavailable"
    if isinstance(error, Unauthorized):
        return 401, "invalid_api_key"
    if isinstance(error, NotFound):
        return 404, "model_not_found" if "run" in str(error) else "not_found"
    if isinstance(error, Overloaded):
        return 429, "queue_full"
    if isinstance(error, DeadlineExceeded):
        return 408, "timeout"
    if isinstance(error, AlreadyExists):
        return 409, "conflict"
    if isinstance(error, ContentBlocked):
        return 400, "content_filter"
    if isinstance(error, ArtifactStoreError):  # ours (the store is unreachable or refuses us), not the request's
        return 503, "artifact_store_unavailable"
    return 400, None


def aigc_error_response(error: AigcError, param: str | None = None) -> JSONResponse:
    status, code = status_of(error)
    headers = {"Retry-After": str(max(1, round(error.retry_after)))} if isinstance(error, Overloaded) else None
    return error_response(status, str(error), param=param or getattr(error, "param", None), code=code, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors() or [{}]
    if errors[0].get("type") == "json_invalid":
        return "the request body is not valid JSON: " + str(errors[0].get("ctx", {}).get("error", "")), None
    if errors[0].get("type") == "unicode_invalid":  # schemas.Strict: the field is in ctx, not in loc
        return errors[0]["msg"], errors[0]["ctx"]["param"] or None
    locs = [[str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")] for e in errors]
    # The parameter is what every error's location shares: a value that fits no branch of a union
    # (stop: a string or a list) reports one error per branch, under the same field.
    common = locs[0]
    for loc in locs[1:]:
        k = 0
        while k < min(len(common), len(loc)) and common[k] == loc[k]:
            k += 1
        common = common[:k]
    deepest = max(range(len(errors)), key=lambda i: len(locs[i]))  # the most specific complaint
    first = errors[deepest]
    param = ".".join(common) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        msg = "unrecognized request argument"
    elif first.get("type") == "missing":
        msg = "missing required parameter"
    return f"{param + ': ' if param else ''}{msg}", param


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AigcError)
    async def _aigc(request: Request, exc: AigcError):
        return aigc_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}: see /docs for the API"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    # Any other exception is a bug of ours: Gate answers it with a 500 (see there), never a 429.


# -- keys, body limit, request metrics: one pure-ASGI layer -------------------------------------


def _catalog_down(error: BaseException) -> bool:
    """Whether ``error`` says the catalog database cannot be reached or used right now (a server down
    or refusing connections, a connection dropped, SQLite locked past its wait): a passing fault."""
    import sqlalchemy as sa

    return isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)) or (
        isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated)


class Gate:
    """API keys (when any exists), the body-size limit, request counting, and the last word on
    an exception nobody handled.

    Pure ASGI, not ``BaseHTTPMiddleware``, so streamed responses and client disconnects pass
    through untouched. Key lookups are cached for a few seconds (a revoked key stops working
    within ``KEY_TTL``).

    An unhandled exception (a bug of ours) is logged and answered here with a 500 in the error
    envelope, rather than by Starlette's outermost handler, which re-raises it to uvicorn, and
    uvicorn then drops the client's keep-alive connection."""

    KEY_TTL = 5.0

    def __init__(self, app, state: dict[str, Any]):
        self.app = app
        self.state = state
        self._required: tuple[float, bool] = (0.0, False)
        self._known: dict[str, tuple[float, str | None]] = {}

    def _keys_required(self, ws: Workspace) -> bool:
        at, value = self._required
        if time.monotonic() - at > self.KEY_TTL:
            value = keys.keys_required(ws)
            self._required = (time.monotonic(), value)
        return value

    def _verify(self, ws: Workspace, key: str) -> str | None:
        hit = self._known.get(key)
        if hit and time.monotonic() - hit[0] < self.KEY_TTL:
            return hit[1]
        key_id = keys.verify(ws, key)
        if len(self._known) > 1000:
            self._known.clear()
        self._known[key] = (time.monotonic(), key_id)
        return key_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        ws = self.state["ws"]
        metrics: ServerMetrics = self.state["metrics"]
        status = {"code": 500, "started": False}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            return await self._serve(scope, receive, path, ws, counting_send, status)
        except Exception as e:
            if status["started"] or not _catalog_down(e):
                raise
            # Ours, and passing: the database is down or refuses connections. A 503 tells the client
            # to come back, where a 500 would say the request broke something.
            log.warning("catalog unavailable in %s %s: %s", scope["method"], path, e)
            await error_response(503, f"the catalog database is unavailable ({type(getattr(e, 'orig', e)).__name__}): "
                                 "try again shortly", code="catalog_unavailable",
                                 headers={"Retry-After": "5"})(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            metrics.requests.labels(path=getattr(route, "path", "other"), status=str(status["code"])).inc()

    async def _serve(self, scope, receive, path: str, ws: Workspace, counting_send, status: dict) -> None:
        if not (path in OPEN_PATHS or path in PAGE_PATHS or path.startswith("/static/")):
            if self._keys_required(ws):
                header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                token = header[7:].strip() if header[:7].lower() == "bearer " else ""
                key_id = self._verify(ws, token) if token else None
                if key_id is None:
                    why = "missing API key: send Authorization: Bearer <key>" if not token else \
                        "invalid or revoked API key"
                    return await error_response(401, why, code="invalid_api_key")(scope, receive, counting_send)
                scope.setdefault("state", {})["key_id"] = key_id
        if scope["method"] == "POST":
            # Every body here is JSON. `curl -d` labels it a form by default (Ollama's examples
            # rely on that working): read such a body as the JSON it is.
            headers = dict(scope["headers"])
            if headers.get(b"content-type", b"").split(b";")[0].strip() in (b"", b"application/x-www-form-urlencoded"):
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                    (b"content-type", b"application/json")]
        limit = self.state["settings"].max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await error_response(413, f"the request body is {int(length)} bytes; the limit is {limit}",
                                        code="body_too_large")(scope, receive, counting_send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A chunked body states no length: read it here and stop at the limit. (Raising
            # from `receive` instead reaches FastAPI's body parser, which answers 400.)
            receive = await self._read_chunked(receive, limit)
            if receive is None:
                return await error_response(413, f"the request body is over the {limit}-byte limit",
                                            code="body_too_large",
                                            headers={"Connection": "close"})(scope, self._nothing, counting_send)
        try:
            await self.app(scope, receive, counting_send)
        except Exception as e:  # noqa: BLE001 - a bug of ours; see the class docstring
            if status["started"]:  # a stream already under way: uvicorn closes it
                log.exception("unhandled error in %s %s", scope["method"], path)
                raise
            if _catalog_down(e):
                raise  # answered with a 503 by __call__
            log.exception("unhandled error in %s %s", scope["method"], path)
            await error_response(500, f"internal error: {type(e).__name__}: {e}")(scope, receive, counting_send)

    @staticmethod
    async def _read_chunked(receive, limit: int):
        """The body's messages, read up to ``limit`` bytes, as a new ``receive`` that replays them;
        None as soon as the body passes the limit (the rest is never read)."""
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                return None
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return replay

    @staticmethod
    async def _nothing():
        return {"type": "http.disconnect"}


# -- the app --------------------------------------------------------------------------------------


def create_app(workspace: Workspace | str | None = None, settings: Settings | None = None) -> FastAPI:
    from aigc import open_workspace
    from aigc.engine import Engine
    from aigc.server.routers import (assistant, audio, copy, monitor, native, openai, recommend, safety,
                                     studio, synthesis)

    ws = open_workspace(workspace)
    settings = settings or Settings()
    shared: dict[str, Any] = {"ws": ws, "settings": settings, "ready": False, "engine": None,
                              "metrics": ServerMetrics()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        options = dict(max_batch=settings.max_batch, max_queue=settings.max_queue,
                       memory_limit=settings.memory_limit, keep_alive=settings.keep_alive,
                       timeout=settings.timeout, log=settings.log, device=settings.device, threads=settings.threads,
                       prefix_cache_tokens=settings.prefix_cache_tokens, safety=settings.safety)
        if settings.engine_process:
            from aigc.engine_process import EngineProcess

            engine = await run_in_threadpool(lambda: EngineProcess(ws, cpu_bind=settings.cpu_bind, **options))
        else:
            engine = Engine(ws, **options)
        shared["engine"] = engine
        shared["metrics"].watch(engine)
        try:
            for name in settings.preload:
                await run_in_threadpool(engine.describe, name)
            shared["ready"] = True
            yield
        finally:
            shared["ready"] = False
            await run_in_threadpool(engine.close)

    app = FastAPI(title="aigc-studio", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible (/v1) and native (/api) API over the runs of one workspace.")
    app.state.shared = shared
    _install_error_handlers(app)

    @app.get("/health", tags=["ops"])
    async def health():
        if not shared["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            stats = await run_in_threadpool(shared["engine"].stats)
        except AigcError as e:  # the engine process is gone
            return JSONResponse({"status": "unavailable", "error": str(e)}, status_code=503)
        return {"status": "ok", "loaded": [e["name"] for e in stats["loaded"]]}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics():
        body, content_type = await run_in_threadpool(shared["metrics"].render)
        return Response(body, media_type=content_type)

    app.include_router(openai.router)
    app.include_router(native.router)
    app.include_router(audio.router)
    app.include_router(safety.router)
    app.include_router(synthesis.router)
    app.include_router(copy.router)
    app.include_router(assistant.router)
    app.include_router(monitor.router)
    app.include_router(recommend.router)
    app.include_router(studio.router)
    studio.mount_static(app)
    app.add_middleware(Gate, state=shared)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _version() -> str:
    from aigc import __version__

    return __version__
