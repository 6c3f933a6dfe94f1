"""Typed request and response bodies of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from emotorch.choices import CATEGORY_NAMES, FEEDBACK_KINDS, FERPLUS_CLASSES, STRATEGIES
from emotorch.recommend.db import canonical_category
from emotorch.recommend.mood import SUM_TOLERANCE
from emotorch.recommend.store import ID_PATTERN

Id = Field(default=None, min_length=1, max_length=128, pattern=ID_PATTERN)
Emotion = Literal[FERPLUS_CLASSES]  # FER+'s eight: FER2013's seven and contempt
# singular or plural ("song", "songs"), always handed on as the singular
Category = Annotated[Literal[CATEGORY_NAMES], AfterValidator(canonical_category)]
# numbers only: "1" and true are refused, not coerced
Probabilities = dict[Emotion, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]]


class ProblemOut(BaseModel):
    """An RFC 9457 problem document: every 4xx answer has this shape."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ImageJSON(BaseModel):
    image: str = Field(min_length=1, description="the photo, base64-encoded (a data: URL is accepted)")


class FaceOut(BaseModel):
    box: list[float] = Field(description="x, y, width, height in the image's pixels")
    landmarks: list[list[float]] = Field(description="eyes, nose tip and mouth corners, as [x, y]")
    detection_score: float
    emotion: str
    probabilities: dict[str, float]
    expressive: dict[str, float] | None = Field(
        default=None,
        description="for a model with an expressive head: its shares, whose largest names the expressive reading",
    )


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="sha256 of the model file that serves (its version)")
    architecture: str
    classes: list[str]
    val_accuracy: float | None = None
    reading: str = Field(
        description="how each face's `emotion` is read: crowd (the most likely vote) or expressive (the "
        "expression it shows: the model's expressive head, or a non-neutral emotion once its share reaches "
        "the threshold)"
    )
    expressive_head: bool = Field(
        default=False, description="whether expressive reads the model's second head, fitted on FER2013's labels"
    )
    expressive_threshold: float | None = Field(
        default=None,
        description="for a model without an expressive head: the share, fitted on val, at which expressive "
        "names a non-neutral emotion",
    )


class EmotionsOut(BaseModel):
    faces: list[FaceOut]
    width: int = Field(description="width of the image the boxes refer to (after any downscaling)")
    height: int
    model: ModelInfo
    inference_ms: float = Field(description="time of the model call this image ran in")
    batch_size: int = Field(description="images that shared that call (micro-batching)")


class MoodIn(BaseModel):
    emotion: Emotion | None = Field(default=None, description="an emotion label; or give probabilities")
    probabilities: Probabilities | None = Field(
        default=None,
        min_length=1,
        description=f"probabilities keyed by emotion, each within [0, 1], summing to 1 (within {SUM_TOLERANCE}; "
        "renormalised)",
    )


class RecommendIn(MoodIn):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["emotion"]}, {"required": ["probabilities"]}]})

    categories: list[Category] | None = Field(default=None, description="default: all five")
    count: int = Field(default=5, ge=1, le=50)
    strategy: Literal[STRATEGIES] = "auto"
    user_id: str | None = Id
    session_id: str | None = Id


class ItemOut(BaseModel):
    id: str
    category: str
    title: str
    description: str
    tags: list[str]
    valence: float
    arousal: float
    price: float | None = None
    url: str | None = None
    image_url: str | None = None
    locale: str = ""


class RecommendationOut(BaseModel):
    item: ItemOut
    score: float
    reason: str
    strategy: str


class RecommendationsOut(BaseModel):
    emotion: str
    confidence: float
    items: list[RecommendationOut]


class FeedbackIn(MoodIn):
    item_id: str = Field(min_length=1, max_length=120)
    kind: Literal[FEEDBACK_KINDS]
    user_id: str | None = Id
    session_id: str | None = Id


class CatalogOut(BaseModel):
    total: int
    items: list[ItemOut]


class NewUserOut(BaseModel):
    user_id: str
    token: str = Field(
        description="send it as `Authorization: Bearer <token>` with every request about this "
        "user; shown once, only its sha256 is stored"
    )


class UserOut(BaseModel):
    user_id: str
    opted_in: bool = Field(description="whether emotion context is stored with this user's feedback")
    strategies: dict[str, str]
    events: dict[str, int] = Field(description="stored feedback events per kind")


class ForgetOut(BaseModel):
    user_id: str
    events_deleted: int


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    model: str
    version: str
    database: str = Field(description='"ok", or "cannot be written now" (the reason is in the server log)')
