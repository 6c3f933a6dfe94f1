"""What wraps every request: the body limit and read timeout, the rate limit, metrics, security headers,
problem documents for every error, and user ids kept out of the access log."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotorch.errors import DatabaseUnavailable
from emotorch.serve.metrics import Metrics
from emotorch.serve.problems import Problem
from emotorch.serve.ratelimit import RateLimiter
from emotorch.serve.settings import Settings

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


class HideUserIds(logging.Filter):
    """Keeps user ids out of the access log: ``/v1/users/<id>`` is logged as ``/v1/users/-``."""

    PATTERN = re.compile(r"(/v1/users/)[^/?\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1-", a) if isinstance(a, str) else a for a in record.args)
        return True


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Every request's wrapping: the body limit inside the rate limit (a refused client uploads nothing),
    metrics, security headers and a problem document for every error."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, timeout=settings.read_timeout_s)
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit > 0 else None

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
