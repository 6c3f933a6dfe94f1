"""The API's routes: emotions, recommendations, feedback, catalog, privacy, health and the page."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import ValidationError

from emotorch import __version__
from emotorch.recommend import list_items, mood
from emotorch.recommend.db import writable
from emotorch.recommend.mood import Mood
from emotorch.recommend.store import ID_PATTERN, ItemNotFound
from emotorch.runtime import registry
from emotorch.runtime.pipeline import EmotionRecognizer
from emotorch.serve.auth import CallerDep, clear_token_cookie, set_token_cookie
from emotorch.serve.deps import BatcherDep, DecodesDep, MetricsDep, ModelInfoDep, RecommenderDep, SettingsDep
from emotorch.serve.problems import Problem, documented
from emotorch.serve.schemas import (
    CatalogOut,
    Category,
    EmotionsOut,
    FaceOut,
    FeedbackIn,
    ForgetOut,
    HealthOut,
    ImageJSON,
    ItemOut,
    ModelInfo,
    MoodIn,
    NewUserOut,
    RecommendationOut,
    RecommendationsOut,
    RecommendIn,
    UserOut,
)
from emotorch.serve.uploads import decode_image, from_base64, from_multipart

router = APIRouter()
log = logging.getLogger("emotorch.serve")
STATIC = Path(__file__).parent / "static"
UserId = Annotated[str, PathParam(min_length=1, max_length=128, pattern=ID_PATTERN)]

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "a photo as a raw image body, a multipart file field `image`, or JSON with base64",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": ImageJSON.model_json_schema()},
        },
    }
}


def model_info(recognizer: EmotionRecognizer) -> ModelInfo:
    """What responses say about the serving model (computed once, when the app starts)."""
    model = recognizer.model
    source = Path(model.source)
    file = model.onnx or (source / "best.pt" if source.is_dir() else source)
    return ModelInfo(
        name=model.name,
        version=registry.sha256(file) if file.is_file() else None,  # the file that serves
        architecture=model.card.architecture,
        classes=model.classes,
        val_accuracy=(model.card.val_metrics or {}).get("accuracy"),
        reading=recognizer.reading,
        expressive_head=model.card.expressive_head,
        expressive_threshold=recognizer.threshold,
    )


def _mood(body: MoodIn) -> Mood:
    try:
        return mood(body.emotion, body.probabilities)
    except ValueError as e:
        raise Problem(422, "Invalid mood", str(e)) from None


async def _image_bytes(request: Request, max_bytes: int) -> bytes:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return from_multipart(body, content_type, max_bytes)
    if content_type.startswith("application/json"):
        try:
            return from_base64(ImageJSON.model_validate_json(body).image)
        except ValidationError as e:
            detail = f'expected {{"image": "<base64>"}} ({e.errors()[0]["msg"]})'
            raise Problem(400, "Bad JSON body", detail) from None
    return body


@router.post(
    "/v1/emotions",
    response_model=EmotionsOut,
    openapi_extra=IMAGE_BODY,
    tags=["emotions"],
    responses=documented(400, 408, 413, 415, 422, 429),
)
async def emotions(
    request: Request,
    settings: SettingsDep,
    batcher: BatcherDep,
    decodes: DecodesDep,
    metrics: MetricsDep,
    model: ModelInfoDep,
) -> EmotionsOut:
    """Every face in the photo with its box, emotion and probabilities. The photo is never stored."""
    data = await _image_bytes(request, settings.max_upload_bytes)
    async with decodes:  # a few decodes at a time: uploads cannot exhaust memory together
        rgb = await asyncio.to_thread(
            decode_image,
            data,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            max_bytes=int(settings.max_image_mb * 2**20),
        )
    faces, batch_size, seconds = await batcher.submit(rgb)
    metrics.images.inc()
    metrics.faces.inc(len(faces))
    return EmotionsOut(
        faces=[FaceOut(**f.to_dict()) for f in faces],
        width=rgb.shape[1],
        height=rgb.shape[0],
        model=model,
        inference_ms=round(seconds * 1000, 2),
        batch_size=batch_size,
    )


@router.post(
    "/v1/recommendations",
    response_model=RecommendationsOut,
    tags=["recommendations"],
    responses=documented(400, 401, 403, 408, 413, 422, 429, 503),
)
def recommendations(body: RecommendIn, recommender: RecommenderDep, caller: CallerDep) -> RecommendationsOut:
    """Items that suit (or lift) the mood, each with the reason it was picked. With a ``user_id``, the
    request must carry that user's token: what the user liked shapes the answer."""
    current = _mood(body)  # categories and strategy are checked by the schema
    if body.user_id:
        caller.require(body.user_id)
    recs = recommender.recommend(
        current,
        categories=body.categories,
        n=body.count,
        strategy=body.strategy,
        user_id=body.user_id,
        session_id=body.session_id,
        record=bool(body.user_id or body.session_id),
    )
    return RecommendationsOut(
        emotion=current.emotion,
        confidence=round(current.confidence, 4),
        items=[
            RecommendationOut(item=ItemOut(**r.item), score=r.score, reason=r.reason, strategy=r.strategy) for r in recs
        ],
    )


@router.post(
    "/v1/feedback",
    status_code=204,
    tags=["recommendations"],
    responses=documented(400, 401, 403, 404, 408, 413, 422, 429, 503),
)
def feedback(body: FeedbackIn, recommender: RecommenderDep, caller: CallerDep) -> None:
    """Record that an item was shown, clicked or liked; the recommender learns from it. With a ``user_id``,
    the request must carry that user's token."""
    current = _mood(body) if body.emotion or body.probabilities else None
    if body.user_id:
        caller.require(body.user_id)
    try:
        recommender.feedback(body.item_id, body.kind, current, user_id=body.user_id, session_id=body.session_id)
    except ItemNotFound as e:
        raise Problem(404, "No such item", str(e)) from None


@router.get("/v1/catalog", response_model=CatalogOut, tags=["recommendations"], responses=documented(422, 429))
def catalog(
    recommender: RecommenderDep,
    category: Category | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> CatalogOut:
    """The catalog's items, optionally of one category, in pages."""
    items = list_items(recommender.engine, category)
    return CatalogOut(total=len(items), items=[ItemOut(**it) for it in items[offset : offset + limit]])


@router.post("/v1/users", status_code=201, response_model=NewUserOut, tags=["privacy"], responses=documented(429, 503))
def new_user(request: Request, response: Response, recommender: RecommenderDep) -> NewUserOut:
    """A new user and its token, shown once (also set as the page's HttpOnly cookie). Nothing else is
    stored until the user sends feedback."""
    user_id, token = recommender.create_user()
    set_token_cookie(request, response, token)
    return NewUserOut(user_id=user_id, token=token)


@router.get(
    "/v1/users/{user_id}", response_model=UserOut, tags=["privacy"], responses=documented(401, 403, 422, 429, 503)
)
def stored_user(user_id: UserId, recommender: RecommenderDep, caller: CallerDep) -> UserOut:
    """Everything stored about a user: consent, preferred strategies and feedback counts (its token only)."""
    caller.require(user_id)
    return UserOut(**recommender.user(user_id))


@router.delete(
    "/v1/users/{user_id}", response_model=ForgetOut, tags=["privacy"], responses=documented(401, 403, 422, 429, 503)
)
def forget(user_id: UserId, response: Response, recommender: RecommenderDep, caller: CallerDep) -> ForgetOut:
    """Delete everything stored about a user, the user and its token included (the page's "Forget me")."""
    caller.require(user_id)
    deleted = recommender.forget(user_id)
    clear_token_cookie(response)
    return ForgetOut(user_id=user_id, events_deleted=deleted)


@router.get("/v1/model", response_model=ModelInfo, tags=["emotions"], responses=documented(429))
async def serving_model(model: ModelInfoDep) -> ModelInfo:
    """The model that answers /v1/emotions: its name, version (sha256), classes and reading."""
    return model


@router.get("/healthz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
def healthz(response: Response, recommender: RecommenderDep, model: ModelInfoDep) -> HealthOut:
    """The model that serves and whether the database can be written (503 when it cannot)."""
    problem = writable(recommender.engine)
    if problem:  # the why (with the database's location) goes to the log, not to every client
        log.warning("health check: %s", problem)
        response.status_code = 503
    return HealthOut(
        status="unavailable" if problem else "ok",
        model=model.name,
        version=__version__,
        database="cannot be written now" if problem else "ok",
    )


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
