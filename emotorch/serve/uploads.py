"""Turn an uploaded body into an RGB array, refusing hostile files before they cost memory.

Dimensions are read from the header and capped before any pixel is decoded (JPEG decodes
straight at a reduced scale); truncated files, non-images and decompression bombs become a
:class:`Problem` naming what is wrong. Nothing is written to disk.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from python_multipart import create_form_parser

from emotorch.runtime.images import rgb_image
from emotorch.serve.problems import Problem

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_ASPECT = 20  # a photo's long side at most this many times its short side (panoramas reach about 10)


def from_base64(text: str) -> bytes:
    """Bytes from base64 text, with or without a ``data:image/...;base64,`` prefix."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(400, "Bad base64", "the 'image' field is not valid base64") from None


def from_multipart(body: bytes, content_type: str, max_bytes: int) -> bytes:
    """The bytes of the ``image`` (or only) file field of a multipart/form-data body, kept in memory."""
    files: dict[str, bytes] = {}

    def on_file(f) -> None:
        f.file_object.seek(0)
        files[(f.field_name or b"").decode(errors="replace")] = f.file_object.read()

    headers = {"Content-Type": content_type.encode(), "Content-Length": str(len(body)).encode()}
    try:
        parser = create_form_parser(headers, None, on_file, config={"MAX_MEMORY_FILE_SIZE": max_bytes + 1})
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python-multipart raises several error types for malformed bodies
        raise Problem(400, "Bad multipart body", f"the multipart body could not be parsed ({e})") from None
    if "image" in files:
        return files["image"]
    if len(files) == 1:
        return next(iter(files.values()))
    raise Problem(400, "No image", "send the photo as a multipart file field named 'image'")


# Bytes per pixel once Pillow has decoded an image in a mode (RGB is stored as 4 bytes a pixel)
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_image(data: bytes, *, max_pixels: int, max_side: int, max_bytes: int | None = None) -> np.ndarray:
    """An RGB uint8 array from encoded image bytes, at most ``max_side`` pixels on its long side.

    Refused before decoding: over ``max_pixels`` pixels, or over ``max_bytes`` once decoded (pixels
    times the mode's bytes per pixel). Large images are shrunk before any mode conversion, which
    for 16-bit and float images works in floating point and would cost several times the image.
    """
    if not data:
        raise Problem(400, "Empty image", "the request carried no image bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise Problem(415, "Not an image", f"the upload is not a supported image ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError:  # Pillow's own, much higher limit
        raise Problem(413, "Image too large", f"the image is over the limit of {max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a header that is truncated or corrupt
        raise Problem(422, "Unreadable image", f"the image header could not be read ({e})") from None
    with im:
        try:
            if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale instead of full size and shrinking
                im.draft("RGB", (max_side, max_side))
            w, h = im.size
            if max(w, h) > MAX_ASPECT * min(w, h):  # no face fits; often a forged or truncated header
                raise Problem(422, "Unreadable image", f"the image is {w}x{h} pixels: too thin to hold a face")
            if w * h > max_pixels:
                raise Problem(
                    413, "Image too large", f"the image is {w}x{h} pixels, over the limit of {max_pixels:,} pixels"
                )
            size = w * h * BYTES_PER_PIXEL.get(im.mode, 4)
            if max_bytes is not None and size > max_bytes:
                raise Problem(
                    413,
                    "Image too large",
                    f"the {w}x{h} {im.mode} image would take {size / 2**20:,.0f} MiB "
                    f"decoded, over the limit of {max_bytes / 2**20:,.0f} MiB",
                )
            im.load()
            if max(im.size) > max_side and im.mode not in ("1", "P"):  # those two shrink only after conversion
                scale = max_side / max(im.size)
                im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
            im = rgb_image(im)
        except Problem:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise Problem(422, "Unreadable image", f"the {im.format} image could not be decoded ({e})") from None
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(im)
