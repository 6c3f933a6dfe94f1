"""Typed request and response bodies of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from emotorch.choices import CATEGORY_NAMES, FEEDBACK_KINDS, STRATEGIES
from emotorch.data import FERPLUS_CLASSES
from emotorch.recommend.db import canonical_category
from emotorch.recommend.engine import SUM_TOLERANCE

Id = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
Emotion = Literal[FERPLUS_CLASSES]  # FER+'s eight: FER2013's seven and contempt
# singular or plural ("song", "songs"), always handed on as the singular
Category = Annotated[Literal[CATEGORY_NAMES], AfterValidator(canonical_category)]
Probabilities = dict[Emotion, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]]


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


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="sha256 of a shipped model's weights file (its version); null otherwise")
    architecture: str
    classes: list[str]
    val_accuracy: float | None = None


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
        default=None, min_length=1,
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


class ForgetOut(BaseModel):
    user_id: str
    events_deleted: int


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    model: str
    version: str
    database: str = Field(description='"ok", or why the recommendation database cannot be written')
