"""Inference without PyTorch: models as ONNX Runtime sessions, numpy preprocessing and test-time views.

:func:`load_model` opens a shipped model by name (its ONNX file, verified against the manifest), an
exported ``.onnx`` file, or a checkpoint or run directory (those need PyTorch, the ``train``
extra). Every consumer (photos, video, the server, evaluation) then calls :func:`predict_proba` on
uint8 faces, preprocessed as the model's metadata says; nothing here imports torch unless a
PyTorch model is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.choices import BACKENDS
from emotorch.data import normalize
from emotorch.errors import CheckpointError, require_torch

# ten-crop: reflect-pad by 2 px, take 48x48 crops at the corners and centre, and flip. On val a 2 px shift
# beat 4 px for every trained run and 26 of 31 ensembles of them (docs/MODEL_CARD.md, "Test-time augmentation").
TTA_PAD = 2
METADATA_KEY = "emotorch"  # the ONNX metadata entry holding the model's metadata as JSON


@dataclass
class LoadedModel:
    """A model ready for inference plus the metadata its preprocessing comes from: ``model`` is an
    :class:`OnnxModel`, or a PyTorch module where the ``train`` extra is installed."""

    model: Any
    meta: dict[str, Any]
    history: list[dict[str, Any]]
    source: str
    onnx: Path | None = None  # the model's ONNX file, when it has one


class OnnxModel:
    """An ONNX Runtime session: normalised faces (N, 1, 48, 48) float32 in, logits (N, K) out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        from emotorch.threads import current

        options = ort.SessionOptions()
        threads = threads or current()  # the process's thread budget, when one was set
        if threads:
            options.intra_op_num_threads = threads
        # idle worker threads must not spin: the face detector shares the same few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own types for unreadable or invalid files
            raise CheckpointError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        self.path = Path(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"faces": np.ascontiguousarray(x, dtype=np.float32)})[0]

    def metadata(self) -> dict[str, Any]:
        """The EmoTorch metadata stored in the file (classes, normalisation, temperature, ...), after checking
        the file's graph against the digest written with it (files from before digests: not checked)."""
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise CheckpointError(f"{self.path}: an ONNX file without EmoTorch metadata (export it with `emotorch "
                                  "export`, which stores the classes and preprocessing)")  # fmt: skip
        try:
            meta = json.loads(text)
            found = graph_digest(self.path) if "graph_sha256" in meta else None
        except ValueError as e:
            raise CheckpointError(f"{self.path}: damaged ({e})") from None
        if found != meta.get("graph_sha256"):
            raise CheckpointError(f"{self.path}: damaged: its weights differ from the ones it was written with "
                                  "(sha256 mismatch); export or download it again")  # fmt: skip
        return meta


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def graph_digest(path: str | os.PathLike) -> str:
    """sha256 of an ONNX file's graph (its nodes and every weight), read from the protobuf wire format
    without the ``onnx`` package: what :func:`emotorch.export.set_metadata` records as ``graph_sha256``,
    so a file whose weights were damaged after writing is caught on load."""
    data, at, digest = Path(path).read_bytes(), 0, hashlib.sha256()
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            size, at = _varint(data, at)
            if field == 7:  # ModelProto.graph
                digest.update(data[at : at + size])
            at += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if at != len(data):
        raise ValueError("truncated protobuf")
    return digest.hexdigest()


def tta_views(x: np.ndarray, pad: int = TTA_PAD) -> list[np.ndarray]:
    """Ten views of a (N, C, H, W) batch: 5 crops of a copy reflect-padded by ``pad``, each also flipped."""
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    offsets = ((0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad), (pad, pad))
    crops = [padded[..., i : i + h, j : j + w] for i, j in offsets]
    return crops + [c[..., ::-1] for c in crops]


def uses_tta(meta: dict[str, Any], tta: bool | None) -> bool:
    """Whether to average test-time views: ``tta`` when given, else the model's own setting."""
    return bool(meta.get("tta", False)) if tta is None else tta


def _forward(model: Any, x: np.ndarray, device: Any) -> np.ndarray:
    if isinstance(model, OnnxModel):
        return model(x)
    import torch  # a PyTorch module: the train extra is installed

    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float().cpu().numpy()


def predict_logits(model: Any, images: np.ndarray, meta: dict[str, Any], *, tta: bool = False,
                   tta_pad: int = TTA_PAD, batch_size: int = 256, device: Any = "cpu",
                   progress: str | None = None) -> np.ndarray:  # fmt: skip
    """Logits (N, K) for uint8 faces (N, 48, 48), preprocessed from ``meta``; TTA averages ten views.
    ``progress``: a progress bar with this title on stderr (where it is a terminal)."""
    if not isinstance(model, OnnxModel):
        model = model.to(device).eval()
    out = [np.zeros((0, len(meta["classes"])), np.float32)]
    bar = None
    if progress:  # only evaluation asks: video frames and server batches make no bar
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc=progress, unit=" face", leave=False)
    for i in range(0, len(images), batch_size):
        if bar is not None:
            bar.update(min(batch_size, len(images) - i))
        x = normalize(np.asarray(images[i : i + batch_size]), meta["mean"], meta["std"])
        views = tta_views(x, tta_pad) if tta else [x]
        out.append(np.mean([_forward(model, v, device) for v in views], axis=0, dtype=np.float32))
    if bar is not None:
        bar.close()
    logits = np.concatenate(out)
    if not np.isfinite(logits).all():
        raise CheckpointError("the model answered NaN or infinity: its weights are damaged")
    return logits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def predict_proba(model: Any, images: np.ndarray, meta: dict[str, Any], *, tta: bool = False,
                  device: Any = "cpu", progress: str | None = None) -> np.ndarray:  # fmt: skip
    """Calibrated class probabilities (N, K): softmax of the logits over the model's temperature."""
    logits = predict_logits(model, images, meta, tta=tta, device=device, progress=progress)
    return softmax(logits, float(meta.get("temperature", 1.0)))


def checked(model: LoadedModel) -> LoadedModel:
    """``model``, once it has answered a plain grey face with finite logits (damaged weights do not)."""
    probe = np.full((1, *model.meta["input_size"][1:]), 128, np.uint8)
    try:
        predict_logits(model.model, probe, model.meta)
    except CheckpointError:
        raise CheckpointError(f"{model.source}: the model answers NaN or infinity: its weights are damaged") from None
    return model


def load_model(name_or_path: str | os.PathLike, backend: str | None = None) -> LoadedModel:
    """A shipped model by name, an exported ``.onnx`` file, or a checkpoint file or run directory.

    ``backend``: None for the model's own engine (ONNX Runtime for shipped models and ONNX files,
    PyTorch for checkpoints); ``onnx`` (checkpoints are exported once into the cache); ``auto``
    (ONNX Runtime where that works, else PyTorch); ``torch``. PyTorch needs the ``train`` extra.
    """
    from emotorch import zoo

    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        name = str(name_or_path)
        name = name.lower() if name.lower() in zoo.shipped() else name  # "Fast" is fast; paths keep their case
        if name not in zoo.shipped():
            known = ", ".join(zoo.shipped()) or "none yet"
            raise CheckpointError(f"{name}: no such checkpoint file, ONNX file, run directory or shipped model "
                                  f"(shipped: {known})")  # fmt: skip
        if backend != "torch" and "onnx" in zoo.shipped()[name]:
            onnx = zoo.shipped_path(name, "onnx")
            model = OnnxModel(onnx)
            return checked(LoadedModel(model, model.metadata(), [], name, onnx))
        require_torch(f"the PyTorch backend of {name}")
        return checked(zoo.load_shipped(name))
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file: it runs on ONNX Runtime, not PyTorch")
        model = OnnxModel(path)
        return checked(LoadedModel(model, model.metadata(), [], str(path), path))
    require_torch(f"{path} (a PyTorch checkpoint)")
    from emotorch import checkpoint
    from emotorch.export import serve_with

    ckpt = checkpoint.load(path)
    loaded = LoadedModel(checkpoint.build_model(ckpt, path), ckpt["meta"], ckpt.get("history", []), str(path))
    return checked(serve_with(loaded, backend))

