"""Reading photos without PyTorch: a path, PIL image or array becomes an upright RGB uint8 array."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emotorch.errors import DataError

IMAGE_SIZE = 48
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# Grayscale mean/std of the FER2013 Training split (pixels scaled to [0, 1]); stored in every
# checkpoint, from which all consumers build their preprocessing.
FER_MEAN = 0.5077
FER_STD = 0.2550

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def rgb_image(image: Image.Image) -> Image.Image:
    """A PIL image upright (EXIF orientation), 8 bits per channel, RGB."""
    return to_8bit(ImageOps.exif_transpose(image)).convert("RGB")


def read_image(source: ImageInput) -> np.ndarray:
    """An RGB uint8 array from a path, PIL image or array; a bad file raises DataError naming it."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise DataError(f"an image array must be uint8 (H, W) or (H, W, 3), not {source.dtype} {source.shape}")
        return np.stack([source] * 3, -1) if source.ndim == 2 else source[..., :3]
    if isinstance(source, Image.Image):
        return np.asarray(rgb_image(source))
    path = Path(source)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(rgb_image(im))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer or float images rescaled to 8 bits (Pillow's convert would clip them)."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    a = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" and a.max() <= 1.0 else 255.0 if a.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8))


def normalize(images, mean: float = FER_MEAN, std: float = FER_STD):
    """uint8 faces (N, 48, 48) -> float32 (N, 1, 48, 48): a numpy array for a numpy array (inference
    needs no PyTorch), a tensor for a tensor (training, on its device)."""
    x = images[:, None] if images.ndim == 3 else images
    x = x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()
    return (x / 255.0 - mean) / std
