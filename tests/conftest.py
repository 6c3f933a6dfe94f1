"""Shared fixtures: a private cache directory and small synthetic FER-style data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotorch.data import CLASSES

SHARED_FER = Path(__file__).resolve().parents[1] / ".." / "shared" / "fer2013"
needs_fer = pytest.mark.skipif(not SHARED_FER.is_dir(), reason=f"FER2013 not found at {SHARED_FER}")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMOTORCH_CACHE", str(tmp_path_factory.mktemp("cache")))


def synthetic_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose class is learnable: class c brightens horizontal band c of a noisy image."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, c * 6 : c * 6 + 6] += 120
    return images, labels


def pixels_text(image: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in image.ravel())


def write_image_folders(root: Path, splits: dict[str, int], seed: int = 0, names=CLASSES) -> Path:
    """ROOT/<split>/<class>/*.png with ``n`` faces per split, cycling over ``names``."""
    for s, (split, n) in enumerate(splits.items()):
        images, labels = synthetic_faces(n, seed + s)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            d = root / split / names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{split}_{i}.png")
    return root


@pytest.fixture
def tiny_folders(tmp_path: Path) -> Path:
    """A train/val image-folder data set: 112 training and 28 validation faces."""
    return write_image_folders(tmp_path / "faces", {"train": 112, "val": 28})
