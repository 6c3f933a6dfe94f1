"""Models shipped inside the package: ONNX files plus a manifest, checked against their sha256.

``emotorch/weights/manifest.json`` lists each shipped model's files and their sha256. ``file`` is
an ONNX graph whose weights are stored compactly (int8 per channel, float16) and whose metadata
carries the classes, input size, normalisation, architecture, recipe, data, val metrics,
calibration temperature and the hardware and time that trained it; PyTorch reads its weights back
exactly. ``onnx`` is what ONNX Runtime serves and the val metrics describe: the same file, or for
``fast`` an int8 one. Reading them is here and needs no PyTorch until a model is loaded on it;
:mod:`emotorch.packaging` writes them.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotorch.errors import CheckpointError

if TYPE_CHECKING:  # naming and verifying shipped models needs no PyTorch; loading and packaging import it
    from emotorch.inference import LoadedModel

WEIGHTS = Path(__file__).with_name("weights")
MANIFEST = WEIGHTS / "manifest.json"
PHOTO_MODEL = "accurate"  # photos: accuracy first
STREAM_MODEL = "fast"  # video, webcam and the server: one int8 network, no TTA
_SHA_KEYS = {"file": "sha256", "onnx": "onnx_sha256"}


def shipped() -> dict[str, dict[str, Any]]:
    """Name -> manifest entry (file, sha256, summary) of every model in the package."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def forget_verified() -> None:
    """Check the shipped files again on their next load (after :mod:`emotorch.packaging` rewrote them)."""
    _verified.cache_clear()


@cache
def _verified(name: str, key: str = "file") -> Path:
    entry = shipped()[name]
    path = WEIGHTS / entry[key]
    if not path.is_file() or sha256(path) != entry[_SHA_KEYS[key]]:
        raise CheckpointError(f"shipped model {name!r} ({path}) is missing or damaged: reinstall emotorch")
    return path


def shipped_path(name: str, key: str = "file") -> Path:
    """The verified checkpoint file (``key="onnx"``: ONNX file) of a shipped model."""
    return _verified(name, key)


def load_shipped(name: str) -> LoadedModel:
    """A shipped model by name on PyTorch (the ``train`` extra), its weights verified and read back from
    its ONNX file; :func:`emotorch.inference.load_model` serves that file without PyTorch."""
    from emotorch import checkpoint
    from emotorch.export import read_weights
    from emotorch.inference import LoadedModel

    manifest = shipped()
    if name not in manifest:
        known = ", ".join(manifest) or "none"
        raise CheckpointError(f"no shipped model {name!r} (shipped: {known}); or pass a checkpoint path")
    path = _verified(name)
    state, meta = read_weights(path)
    return LoadedModel(checkpoint.build_model({"model": state, "meta": meta}, path), meta, [], name,
                       _verified(name, "onnx"))  # fmt: skip
