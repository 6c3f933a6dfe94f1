"""The model registry: models shipped inside the package, checked against their sha256, and loading a
model by name or path.

``emotorch/weights/manifest.json`` lists each shipped model's files and their sha256. ``file`` is
an ONNX graph whose weights are stored compactly (int8 per channel, float16) and whose metadata
carries the model's card; PyTorch reads its weights back exactly. ``onnx`` is what ONNX Runtime
serves and the val metrics describe: the same file, or for ``fast`` an int8 one.
:mod:`emotorch.training.packaging` writes them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from emotorch.choices import BACKENDS
from emotorch.errors import CheckpointError, require_torch
from emotorch.runtime.card import ModelCard
from emotorch.runtime.classifier import Classifier
from emotorch.runtime.session import OnnxModel

WEIGHTS = Path(__file__).parent.parent / "weights"
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
    """Check the shipped files again on their next load (after :mod:`emotorch.training.packaging` rewrote them)."""
    _verified.cache_clear()


@cache
def _verified(name: str, key: str = "file") -> Path:
    entry = shipped()[name]
    path = WEIGHTS / entry[key]
    if not path.is_file() or sha256(path) != entry[_SHA_KEYS[key]]:
        raise CheckpointError(f"shipped model {name!r} ({path}) is missing or damaged: reinstall emotorch")
    return path


def shipped_path(name: str, key: str = "file") -> Path:
    """The verified ONNX file of a shipped model: its compact weights (``file``) or what serves (``onnx``)."""
    if name not in shipped():
        known = ", ".join(shipped()) or "none"
        raise CheckpointError(f"no shipped model {name!r} (shipped: {known}); or pass a checkpoint path")
    return _verified(name, key)


def open_onnx(path: Path, source: str) -> Classifier:
    """An ONNX file (its card read from its metadata, its graph checked against its digest) on ONNX Runtime."""
    session = OnnxModel(path)
    return Classifier(session, ModelCard.from_dict(session.metadata(), path), source, path).checked()


def _torch_side(what: str) -> ModuleType:
    """:mod:`emotorch.training.loading`, for PyTorch models only. It is looked up by name so that the
    runtime never imports the training side (tests/test_layers.py checks every import statement)."""
    require_torch(what)
    return importlib.import_module("emotorch.training.loading")


def load_model(name_or_path: str | os.PathLike, backend: str | None = None) -> Classifier:
    """A shipped model by name, an exported ``.onnx`` file, or a checkpoint file or run directory.

    ``backend``: None for the model's own engine (ONNX Runtime for shipped models and ONNX files,
    PyTorch for checkpoints); ``onnx`` (checkpoints are exported once into the cache); ``auto``
    (ONNX Runtime where that works, else PyTorch); ``torch``. PyTorch needs the ``train`` extra.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        name = str(name_or_path)
        name = name.lower() if name.lower() in shipped() else name  # "Fast" is fast; paths keep their case
        if name not in shipped():
            known = ", ".join(shipped()) or "none yet"
            raise CheckpointError(
                f"{name}: no such checkpoint file, ONNX file, run directory or shipped model (shipped: {known})"
            )
        if backend != "torch":
            return open_onnx(shipped_path(name, "onnx"), name)
        return _torch_side(f"the PyTorch backend of {name}").load_shipped(name).checked()
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file: it runs on ONNX Runtime, not PyTorch")
        return open_onnx(path, str(path))
    return _torch_side(f"{path} (a PyTorch checkpoint)").load_checkpoint(path, backend).checked()


def serve_with(model: Classifier, backend: str | None = None) -> Classifier:
    """``model`` on an inference engine (see :func:`load_model`); a model on ONNX Runtime stays there."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if isinstance(model.net, OnnxModel) or backend in (None, "torch"):
        return model
    return _torch_side(f"{model.source} on {backend}").serve_with(model, backend)
