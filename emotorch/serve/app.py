"""The app factory: the serving state (model, micro-batcher, recommender) made when the app starts, the
middleware (:mod:`emotorch.serve.middleware`) and the routers; routes reach the state through the
dependencies in :mod:`emotorch.serve.deps`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from emotorch import __version__
from emotorch.recommend import Recommender
from emotorch.runtime.pipeline import EmotionRecognizer
from emotorch.runtime.threads import configure
from emotorch.serve import middleware, routes
from emotorch.serve.batching import MicroBatcher
from emotorch.serve.metrics import Metrics
from emotorch.serve.schemas import ProblemOut
from emotorch.serve.settings import ENV, Settings

__all__ = ["ENV", "Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The EmoTorch web app: REST API under /v1, the camera page at /, /healthz and /metrics."""
    settings = settings or Settings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure(settings.threads)  # before the model and the detector start their thread pools
        recognizer = EmotionRecognizer(settings.model, backend=settings.backend, reading=settings.reading)
        batcher = MicroBatcher(
            recognizer.predict_many,
            window=settings.batch_window_ms / 1000,
            max_batch=settings.max_batch,
            on_batch=metrics.observe_batch,
        )
        await batcher.start()
        app.state.batcher, app.state.model_info = batcher, routes.model_info(recognizer)
        app.state.recommender = Recommender(settings.db)
        app.state.decodes = asyncio.Semaphore(settings.max_decodes)
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, middleware.HideUserIds) for f in access.filters):
            access.addFilter(middleware.HideUserIds())
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
    middleware.install(app, settings, metrics)
    app.add_api_route(
        "/metrics", lambda: Response(metrics.render(), media_type=metrics.content_type), include_in_schema=False
    )
    app.include_router(routes.router)
    _document_problems(app)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app


def _document_problems(app: FastAPI) -> None:
    """Add the Problem schema to the OpenAPI document and drop FastAPI's default 422 (a problem here)."""

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
