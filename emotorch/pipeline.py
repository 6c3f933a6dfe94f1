"""From a photo to emotions: detect faces, align them to FER2013's framing, classify them in one batch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emotorch.data import DataError
from emotorch.detect import Detector, YuNetDetector, align
from emotorch.evaluate import LoadedModel, load_model, predict_proba

ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass
class FaceResult:
    """One face: where it is, how sure the detector was, and the emotion probabilities."""

    box: tuple[float, float, float, float]  # x, y, w, h in the image's pixels
    landmarks: list[list[float]]
    detection_score: float
    emotion: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "landmarks": [[round(v, 1) for v in p] for p in self.landmarks],
            "detection_score": round(self.detection_score, 4),
            "emotion": self.emotion,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        }


def read_image(source: ImageInput) -> np.ndarray:
    """An RGB uint8 array from a path, PIL image or array; a bad file raises DataError naming it."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise DataError(f"an image array must be uint8 (H, W) or (H, W, 3), not {source.dtype} {source.shape}")
        return np.stack([source] * 3, -1) if source.ndim == 2 else source[..., :3]
    if isinstance(source, Image.Image):
        return np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    path = Path(source)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


class EmotionRecognizer:
    """Emotions of every face in an image. ``model`` is a shipped model's name, a checkpoint file or a
    run directory;
    ``backend="onnx"`` serves it with ONNX Runtime (exported once into the cache)."""

    def __init__(self, model: str | os.PathLike | LoadedModel = "default", detector: Detector | None = None,
                 *, tta: bool = False, backend: str = "torch") -> None:  # fmt: skip
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be torch or onnx, not {backend!r}")
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        if backend == "onnx":
            from emotorch.export import onnx_backend

            self.model = onnx_backend(self.model)
        self.detector = detector if detector is not None else YuNetDetector()
        self.tta = tta
        self.classes: list[str] = list(self.model.meta["classes"])

    def predict(self, image: ImageInput) -> list[FaceResult]:
        """Every face found, left to right; a photo without faces gives an empty list."""
        rgb = read_image(image)
        faces = self.detector(rgb)
        if not faces:
            return []
        crops = np.stack([align(rgb, f) for f in faces])  # all faces through the model in one batch
        probs = predict_proba(self.model.model, crops, self.model.meta, tta=self.tta)
        return [
            FaceResult(f.box, f.landmarks.tolist(), f.score, self.classes[int(p.argmax())],
                       {c: float(v) for c, v in zip(self.classes, p, strict=True)})
            for f, p in zip(faces, probs, strict=True)
        ]  # fmt: skip
