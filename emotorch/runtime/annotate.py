"""Annotated copies of photos: a box, the emotion and probability bars for every face."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # drawing needs no pipeline (nor its ONNX Runtime)
    from emotorch.runtime.pipeline import FaceResult


# Okabe and Ito's palette, which readers with any common colour-vision deficiency can tell apart (angry
# and contempt, fear and sad no longer share a hue); neutral is its grey
COLORS = {
    "angry": (213, 94, 0),
    "disgust": (0, 158, 115),
    "fear": (204, 121, 167),
    "happy": (230, 159, 0),
    "neutral": (140, 140, 140),
    "sad": (0, 114, 178),
    "surprise": (240, 228, 66),
    "contempt": (86, 180, 233),
}


def annotate(rgb: np.ndarray, faces: list[FaceResult], labels: list[str] | None = None) -> Image.Image:
    """Draw each face's box in its emotion's colour, the label with its probability, and seven bars.

    ``labels`` (one per face, e.g. track ids) prefix the emotion label.
    """
    image = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = max(1.0, max(image.size) / 640)
    font = ImageFont.load_default(size=int(12 * scale))
    for k, face in enumerate(faces):
        x, y, w, h = face.box
        color = COLORS.get(face.emotion, (255, 255, 255))
        draw.rectangle([x, y, x + w, y + h], outline=color, width=max(2, int(2 * scale)))
        label = (f"{labels[k]} " if labels else "") + f"{face.emotion} {face.share:.0%}"
        tw = draw.textlength(label, font=font)
        draw.rectangle([x, y - 16 * scale, x + tw + 6, y], fill=color)
        draw.text((x + 3, y - 15 * scale), label, fill=(0, 0, 0), font=font)
        bar_w, row = 60 * scale, 11 * scale
        draw.rectangle(
            [x, y + h + 2, x + 24 * scale + bar_w, y + h + 6 + row * len(face.probabilities)], fill=(30, 30, 30)
        )
        for i, (name, p) in enumerate(face.probabilities.items()):  # bars below the box
            top = y + h + 4 + i * row
            draw.text((x, top - 1), name[:3], fill=(255, 255, 255), font=ImageFont.load_default(size=int(9 * scale)))
            draw.rectangle([x + 22 * scale, top, x + 22 * scale + bar_w * p, top + row - 3], fill=COLORS.get(name))
    return image
