"""The app factory: settings, shared state (model, micro-batcher, recommender), middleware, routers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotorch import __version__
from emotorch.errors import DatabaseUnavailable
from emotorch.runtime.registry import STREAM_MODEL
from emotorch.serve.batching import MicroBatcher
from emotorch.serve.metrics import Metrics
from emotorch.serve.problems import Problem
from emotorch.serve.ratelimit import RateLimiter

ENV = "EMOTORCH_SERVE_SETTINGS"  # JSON settings handed to each worker process
log = logging.getLogger("emotorch.serve")
DOCS_PAGES = ("/docs", "/redoc")
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; frame-ancestors 'none'"
)
# The page and everything else: scripts, styles and fetches from this server only; snapped stills
# and the camera as blob: and mediastream: URLs; no framing by other sites, no form posts elsewhere
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@dataclass
class Settings:
    """What ``emotorch serve`` can be told; every field has a safe default."""

    model: str = STREAM_MODEL
    backend: str = "auto"
    reading: str = "expressive"  # faces in front of a camera: name an emotion once it shows (emotorch.runtime.reading)
    db: str | None = None  # SQLAlchemy URL of the catalog (default: EMOTORCH_DB or the user data dir)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # refused before decoding
    max_image_mb: float = 128.0  # refused before decoding: pixels times the mode's bytes per pixel
    max_decodes: int = 2  # images decoded at once (the rest wait): bounds the memory uploads take
    max_side: int = 1920  # larger photos are decoded at reduced scale or shrunk to this
    read_timeout_s: float = 15.0  # a client that sends no body bytes for this long gets 408
    batch_window_ms: float = 3.0
    max_batch: int = 16
    rate_limit: float = 0.0  # requests per second per client on /v1/; 0 turns limiting off
    rate_burst: float | None = None
    threads: int | None = None  # this worker's thread budget (emotorch serve: the cores / --workers)

    @classmethod
    def from_env(cls) -> Settings:
        raw = json.loads(os.environ.get(ENV, "{}"))
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{ENV} has unknown settings: {', '.join(sorted(unknown))}")
        return cls(**raw)

    def to_env(self) -> str:
        return json.dumps(asdict(self))


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while they stream in,
    and bodies that stall (no bytes for ``timeout`` seconds) with 408.

    The body is read here, before the app runs, and replayed to it: an app never sees a body that
    is over the limit, and a refused client is answered without reading the rest.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 15.0) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = f"request bodies are limited to {self.max_bytes:,} bytes"
        too_large = Problem(413, "Upload too large", limit).response({"Connection": "close"})
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                stalled = Problem(408, "Request timeout", f"no request body bytes arrived for {self.timeout:g} s")
                await stalled.response({"Connection": "close"})(scope, receive, send)
                return
            if message["type"] == "http.disconnect":  # the client left, or sent a body the server refused
                raise ClientDisconnect()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)


def _document_problems(app: FastAPI) -> None:
    """Add the Problem schema to the OpenAPI document and drop FastAPI's default 422 (a problem here)."""
    from fastapi.openapi.utils import get_openapi

    from emotorch.serve.schemas import ProblemOut

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = ProblemOut.model_json_schema()
            for path in spec["paths"].values():
                for operation in path.values():
                    answer = operation.get("responses", {}).get("422", {})
                    answer.get("content", {}).pop("application/json", None)
            for name in ("HTTPValidationError", "ValidationError"):
                spec["components"]["schemas"].pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi


class HideUserIds(logging.Filter):
    """Keeps user ids out of the access log: ``/v1/users/<id>`` is logged as ``/v1/users/-``."""

    PATTERN = re.compile(r"(/v1/users/)[^/?\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1-", a) if isinstance(a, str) else a for a in record.args)
        return True


def create_app(settings: Settings | None = None) -> FastAPI:
    """The EmoTorch web app: REST API under /v1, the camera page at /, /healthz and /metrics."""
    from emotorch.recommend import Recommender
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.serve import routes

    settings = settings or Settings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from emotorch.runtime.threads import configure

        configure(settings.threads)  # before the model and the detector start their thread pools
        recognizer = EmotionRecognizer(settings.model, backend=settings.backend, reading=settings.reading)

        def on_batch(size: int, seconds: float) -> None:
            metrics.batch_size.observe(size)
            metrics.batch_seconds.observe(seconds)

        batcher = MicroBatcher(
            recognizer.predict_many,
            window=settings.batch_window_ms / 1000,
            max_batch=settings.max_batch,
            on_batch=on_batch,
        )
        await batcher.start()
        app.state.batcher, app.state.model_info = batcher, routes.model_info(recognizer)
        app.state.recommender = Recommender(settings.db)
        app.state.decodes = asyncio.Semaphore(settings.max_decodes)
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, HideUserIds) for f in access.filters):
            access.addFilter(HideUserIds())
        try:
            yield
        finally:
            await batcher.stop()
            app.state.recommender.engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from fastapi-offline's copies, not from a CDN
    app = FastAPIOffline(
        title="EmoTorch",
        version=__version__,
        lifespan=lifespan,
        description="Facial emotion recognition and emotion-aware recommendations.",
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings, app.state.metrics = settings, metrics
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit > 0 else None
    # added first, so it runs inside the middleware below: a refused client uploads nothing
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, timeout=settings.read_timeout_s)

    @app.middleware("http")
    async def measure_and_limit(request: Request, call_next):
        if limiter is not None and request.url.path.startswith("/v1/"):
            wait = limiter.wait(request.client.host if request.client else "?")
            if wait > 0:
                p = Problem(429, "Too many requests", f"at most {settings.rate_limit:g} requests a second per client")
                metrics.requests.labels("/v1/*", request.method, "429").inc()
                return p.response({"Retry-After": str(max(1, round(wait)))})
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except ClientDisconnect:  # gone before its body arrived (or a malformed chunk uvicorn answered 400 to)
            response = Response(status_code=400)
        except Exception:  # a bug: logged with its traceback, answered as a problem document, counted
            log.exception("%s %s failed", request.method, HideUserIds.PATTERN.sub(r"\1-", request.url.path))
            response = Problem(500, "Internal error", "the server failed on this request; it is logged").response()
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        # ReDoc would fetch its logo from a CDN: every page keeps its fetches on this server
        response.headers["Content-Security-Policy"] = DOCS_POLICY if path in DOCS_PAGES else PAGE_POLICY
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return Problem(exc.status_code, str(exc.detail), str(exc.detail)).response(exc.headers)

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(DatabaseUnavailable)
    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", str(getattr(exc, "orig", None) or exc).splitlines()[0])
        p = Problem(503, "Database unavailable", "the recommendation database cannot be written or read now")
        return p.response({"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return Problem(422, "Invalid request", where).response()

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    app.include_router(routes.router)
    _document_problems(app)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app
