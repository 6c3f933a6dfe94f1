"""From a photo to emotions: detect faces, align them to FER2013's framing, classify them in one batch."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.runtime import threads
from emotorch.runtime.classifier import Classifier, softmax
from emotorch.runtime.detect import Detector, Face, YuNetDetector, align
from emotorch.runtime.images import ImageInput, read_image
from emotorch.runtime.reading import check, chosen
from emotorch.runtime.registry import PHOTO_MODEL, load_model, serve_with


@dataclass
class FaceResult:
    """One face: where it is, how sure the detector was, and the emotion probabilities."""

    box: tuple[float, float, float, float]  # x, y, w, h in the image's pixels
    landmarks: list[list[float]]
    detection_score: float
    emotion: str
    probabilities: dict[str, float]
    expressive: dict[str, float] | None = None  # the expressive head's shares, for a model that has one

    @property
    def share(self) -> float:
        """The share behind the answer, to print beside it: the expressive head's where its top names the
        answer (the expressive reading), else the probability."""
        if self.expressive and max(self.expressive, key=self.expressive.__getitem__) == self.emotion:
            return self.expressive[self.emotion]
        return self.probabilities[self.emotion]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "landmarks": [[round(v, 1) for v in p] for p in self.landmarks],
            "detection_score": round(self.detection_score, 4),
            "emotion": self.emotion,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        } | ({"expressive": {k: round(v, 4) for k, v in self.expressive.items()}} if self.expressive else {})


def write_summary(path: Path, results: list[dict[str, Any]], classes: list[str]) -> None:
    """`predict --out`'s summary.csv: a row per face (photo, face index, box, emotion, every probability), and
    a row for each photo without a face (``no face``) or that could not be read (the error), so that every
    input is accounted for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "face", "x", "y", "w", "h", "emotion", *classes, "error"])
        for r in results:
            if not r["faces"]:
                writer.writerow([r["path"], "", "", "", "", "", "", *[""] * len(classes), r.get("error", "no face")])
            writer.writerows(
                [r["path"], i, *face["box"], face["emotion"], *(face["probabilities"][c] for c in classes), ""]
                for i, face in enumerate(r["faces"])
            )


class EmotionRecognizer:
    """Emotions of every face in an image. ``model`` is a shipped model's name, an exported ``.onnx``
    file, a checkpoint file, a run directory or a :class:`Classifier`. ``backend`` (see
    :func:`emotorch.runtime.registry.load_model`):
    by default shipped models and ONNX files run on ONNX Runtime (no PyTorch needed) and checkpoints
    on PyTorch; ``"onnx"`` exports a checkpoint once into the cache (faster on the CPU:
    benchmarks/pipeline_speed.py); ``"torch"`` runs a shipped model's float weights on PyTorch.
    ``reading`` names each face's emotion (:mod:`emotorch.runtime.reading`): ``crowd``, the most likely
    vote, or ``expressive``, the expression it shows (the model's expressive head, or a threshold); by
    default expressive where the model can read it (:func:`emotorch.runtime.reading.chosen`)."""

    def __init__(
        self,
        model: str | os.PathLike | Classifier = PHOTO_MODEL,
        detector: Detector | None = None,
        *,
        tta: bool | None = None,
        backend: str | None = None,
        reading: str | None = None,
    ) -> None:
        if threads.current() is None:  # the Python API gets the CLI's thread budget: OpenCV's default pool
            threads.configure()  # fights ONNX Runtime for the same cores (YuNet 0.44 s instead of 0.02 s)
        self.model = serve_with(model, backend) if isinstance(model, Classifier) else load_model(model, backend)
        self.detector = detector if detector is not None else YuNetDetector()
        self.tta = self.model.card.tta if tta is None else tta
        self.classes: list[str] = self.model.classes
        self.reading, self.threshold = chosen(reading, self.model.card), self.model.card.expressive_threshold
        check(self.reading, self.threshold, self.model.card.expressive_head)  # a bad reading fails here, not on a face

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, K) of aligned uint8 faces (N, 48, 48), with this recognizer's TTA
        setting: the probabilities :meth:`predict` and :meth:`answer` give the same faces."""
        return self.model.predict_proba(crops, tta=self.tta)

    def answer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, K), answers (N,)) of aligned uint8 faces under this recognizer's reading and TTA
        setting: what :meth:`predict` says of each face, for callers that bring their own crops (``analyse``)."""
        return self.model.predict(crops, tta=self.tta, reading=self.reading)

    def predict(self, image: ImageInput) -> list[FaceResult]:
        """Every face found, left to right; a photo without faces gives an empty list."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[ImageInput]) -> list[list[FaceResult]]:
        """The faces of each image, with the faces of all images classified in one batch."""
        rgbs = [read_image(image) for image in images]
        return self.classify(rgbs, [self.detector(rgb) for rgb in rgbs])

    def classify(self, rgbs: Sequence[np.ndarray], faces: Sequence[list[Face]]) -> list[list[FaceResult]]:
        """Emotions of faces already located in RGB images (``faces[i]`` in ``rgbs[i]``), in one batch."""
        crops = [align(rgb, f) for rgb, found in zip(rgbs, faces, strict=True) for f in found]
        if not crops:
            return [[] for _ in faces]
        outputs = self.model.predict_outputs(np.stack(crops), tta=self.tta)
        probs, picked = self.model.read(outputs, self.reading)
        shares = softmax(outputs["expressive"]) if "expressive" in outputs else [None] * len(probs)
        answers = iter(zip(probs, picked, shares, strict=True))

        def named(values: np.ndarray | None) -> dict[str, float] | None:
            return None if values is None else {c: float(v) for c, v in zip(self.classes, values, strict=True)}

        return [
            [
                FaceResult(f.box, f.landmarks.tolist(), f.score, self.classes[int(k)], named(p), named(e))
                for f, (p, k, e) in zip(found, answers, strict=False)
            ]
            for found in faces
        ]
