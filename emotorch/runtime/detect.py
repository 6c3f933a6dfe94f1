"""Faces in photos: detection behind a small interface, and alignment to FER2013's framing.

FER2013 faces are tight 48x48 crops. :data:`FER_TEMPLATE` is where five landmarks sit in them,
measured by running the detector on the FER2013 PublicTest faces (``benchmarks/align_framing.py``
re-measures it and shows what the framing is worth in accuracy). :func:`align` fits a similarity
transform (rotation, scale, shift: the eyes come out level) from a face's landmarks to that
template, so that a face from a selfie reaches the model framed like the faces it learned from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from emotorch.runtime.images import IMAGE_SIZE

# Median landmark positions in FER2013 48x48 faces (x, y): right eye, left eye, nose tip,
# right and left mouth corner (as seen in the image). From 1,152 detected PublicTest faces.
FER_TEMPLATE = np.array([[14.75, 18.5], [33.0, 18.5], [23.25, 28.5], [16.25, 36.0], [31.0, 36.25]], np.float32)


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` (x, y, w, h) and ``landmarks`` (5, 2) in image pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


class Detector(Protocol):
    """Anything that finds faces in an RGB uint8 image (H, W, 3)."""

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...


class YuNetDetector:
    """YuNet (libfacedetection, BSD-3; weights compiled into the ``yuface`` package, no download).

    Images larger than ``max_side`` are detected on a downscaled copy and the boxes mapped back;
    faces narrower than ``min_face`` pixels (in the original image) are dropped. Its landmarks
    lean toward level eyes: on scikit-image's astronaut tilted by 20 degrees they read as a
    3 degree tilt, so strongly tilted faces stay partly tilted after :func:`align`.
    """

    def __init__(self, score_threshold: float = 0.6, max_side: int = 640, min_face: int = 20) -> None:
        import yuface  # the detector is optional until a face is needed

        self._detect = yuface.detect
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.min_face = min_face

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # a 1300x1 strip stays 1 pixel high
        small = rgb if scale == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(small[..., ::-1])
        scores, boxes, landmarks = self._detect(bgr, conf=self.score_threshold)
        faces = []
        for score, box, lm in zip(scores, boxes, landmarks, strict=True):
            box = box.astype(np.float32) / scale
            if box[2] < self.min_face:
                continue
            points = lm.astype(np.float32).reshape(5, 2) / scale
            faces.append(Face(tuple(float(v) for v in box), points, float(score) / 100))
        return sorted(faces, key=lambda f: f.box[0])


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) or gray (H, W) uint8 -> gray, weighted as PIL's ``convert("L")`` does."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)


def alignment_matrix(face: Face, size: int = IMAGE_SIZE) -> np.ndarray:
    """The 2x3 similarity transform taking the face's landmarks onto the FER template."""
    template = FER_TEMPLATE * (size / IMAGE_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to the eyes alone
        matrix = cv2.estimateAffinePartial2D(face.landmarks[:2].astype(np.float32), template[:2])[0]
    return matrix


def align(image: np.ndarray, face: Face, size: int = IMAGE_SIZE) -> np.ndarray:
    """The face as a ``size`` x ``size`` uint8 gray crop, eyes level, framed like FER2013."""
    gray = to_gray(image)
    matrix = alignment_matrix(face, size)
    shrink = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if shrink < 0.5:  # a large face: downsample with area averaging first, so the crop does not alias
        factor = 2 * shrink
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= factor
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
