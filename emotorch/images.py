"""Reading photos without PyTorch: a path, PIL image or array becomes an upright RGB uint8 array."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emotorch.data import DataError, to_8bit

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
