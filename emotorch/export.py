"""ONNX export (float32, or int8 calibrated on training faces) and the engine a model is served with."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emotorch.choices import BACKENDS
from emotorch.data import FaceSet, cache_dir, normalize
from emotorch.evaluate import LoadedModel

log = logging.getLogger(__name__)

METADATA_KEYS = ("model", "model_options", "classes", "input_size", "mean", "std", "temperature")
CALIBRATION_FACES = 2048  # training faces that calibrate an int8 model's activation ranges


def export_onnx(model: LoadedModel, path: str | os.PathLike) -> Path:
    """Write the model as ONNX (input ``faces`` (N, 1, 48, 48), output ``logits``), batch size dynamic.

    The checkpoint's metadata (classes, input size, mean/std, temperature) travels in the
    file's metadata as JSON under ``emotorch``, so the ONNX file is usable on its own.
    """
    path = Path(path)
    net = model.model.float().eval().cpu()
    example = torch.zeros(2, *model.meta["input_size"])
    batch = torch.export.Dim("batch")
    torch.onnx.export(net, (example,), str(path), input_names=["faces"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), dynamo=True, verbose=False)  # fmt: skip
    set_metadata(path, model.meta)
    return path


def set_metadata(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Store the model's preprocessing and temperature in an ONNX file's ``emotorch`` metadata entry."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != "emotorch"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "emotorch", json.dumps({k: meta[k] for k in METADATA_KEYS if k in meta})
    onnx.save(proto, str(path))


def calibration_sample(train: FaceSet, n: int = CALIBRATION_FACES) -> np.ndarray:
    """A seeded sample of training faces (uint8 (n, 48, 48)) to calibrate int8 activation ranges."""
    pick = np.random.default_rng(0).choice(len(train), min(n, len(train)), replace=False)
    return train.images[np.sort(pick)]


def quantize_onnx(model: LoadedModel, path: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Write the model as int8 ONNX: weights quantised per channel, activation ranges calibrated on
    ``calibration`` (uint8 faces (N, 48, 48), e.g. a sample of the training split). On CPUs with
    VNNI this classifies about 3x faster than float32 (benchmarks/accuracy.py)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = model.meta

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = (
                {"faces": normalize(calibration[i : i + 64], meta["mean"], meta["std"]).numpy()}
                for i in range(0, len(calibration), 64)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        export_onnx(model, fp32)
        quant_pre_process(str(fp32), str(prepared))  # shape inference and graph folding first
        quantize_static(str(prepared), str(path), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    set_metadata(path, meta)
    return path


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call that inference code already makes."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        from emotorch.threads import current

        options = ort.SessionOptions()
        threads = threads or current()  # the process's thread budget, when one was set
        if threads:
            options.intra_op_num_threads = threads
        # idle worker threads must not spin: the face detector shares the same few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: Tensor) -> Tensor:
        faces = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"faces": faces})[0])


def onnx_backend(model: LoadedModel) -> LoadedModel:
    """The same model served by ONNX Runtime: the ONNX file it ships with (``fast``: int8), or else
    exported once into the cache (keyed by its weights)."""
    if model.onnx is not None:
        return LoadedModel(OnnxModel(model.onnx), model.meta, model.history, f"{model.source} (onnx)")
    digest = hashlib.sha256()
    for name, tensor in sorted(model.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{os.getpid()}.{path.name}")
        export_onnx(model, tmp)
        os.replace(tmp, path)
    return LoadedModel(OnnxModel(path), model.meta, model.history, f"{model.source} (onnx)")


def serve_with(model: LoadedModel, backend: str | None = None) -> LoadedModel:
    """The model on an inference engine: ``torch``; ``onnx`` (ONNX Runtime); ``auto`` (ONNX Runtime
    where it loads, else PyTorch); None: the model's own setting, ``auto`` for a model that ships an
    ONNX file (``fast``, whose val metrics are its int8 file's) and ``torch`` for the others."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend is None:
        backend = "auto" if model.onnx is not None else "torch"
    if backend == "torch":
        return model
    try:
        return onnx_backend(model)
    except Exception as e:  # auto: any failure to export or load falls back to PyTorch
        if backend == "onnx":
            raise
        log.warning("ONNX Runtime unavailable (%s); serving with PyTorch", e)
        return model
