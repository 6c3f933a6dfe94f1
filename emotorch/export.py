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

from emotorch.choices import BACKENDS
from emotorch.data import FaceSet, cache_dir, normalize
from emotorch.errors import CheckpointError
from emotorch.inference import METADATA_KEY, LoadedModel, OnnxModel, graph_digest

log = logging.getLogger(__name__)

CALIBRATION_FACES = 2048  # training faces that calibrate an int8 model's activation ranges


def export_onnx(model: LoadedModel, path: str | os.PathLike, *, compact: bool = False) -> Path:
    """Write the model as one ONNX file (input ``faces`` (N, 1, 48, 48), output ``logits``), batch size
    dynamic; an ensemble becomes one graph.

    The checkpoint's metadata (classes, input size, mean/std, temperature, provenance) travels in
    the file's metadata as JSON under ``emotorch``, so the ONNX file is usable on its own. With
    ``compact`` (shipped models, whose weights are rounded by :func:`shipped_precision` already)
    each weight is stored in the fewest bits that hold it exactly and widened to float32 when the
    session loads: a quarter of the file, the same numbers, and :func:`read_weights` gets them back.
    """
    path = Path(path)
    net = model.model.float().eval().cpu()
    example = torch.zeros(2, *model.meta["input_size"])
    batch = torch.export.Dim("batch")
    # compact: the graph unoptimised, its weights named as in the state dict (ONNX Runtime folds batch norm)
    torch.onnx.export(net, (example,), str(path), input_names=["faces"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), dynamo=True, external_data=False, optimize=not compact,
                      verbose=False)  # fmt: skip
    if compact:
        _store_compact(path)
    set_metadata(path, model.meta)
    return path


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and a float32 scale per output channel (symmetric: the largest magnitude is 127)."""
    top = np.abs(weight.reshape(len(weight), -1)).max(1)
    scale = np.where(top > 0, top / 127, 1).astype(np.float32)
    return np.clip(np.rint(weight / _per_row(scale, weight.ndim)), -127, 127).astype(np.int8), scale


def _per_row(scale: np.ndarray, ndim: int) -> np.ndarray:
    return scale.reshape(-1, *[1] * (ndim - 1))


def _dequantize(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) * _per_row(scale, values.ndim)  # what DequantizeLinear computes


def shipped_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict rounded to what ships: matrices and filters to int8 per output channel, other
    floats to float16 (the shipped models' val accuracy moved by one face at most, docs/MODEL_CARD.md)."""
    def rounded(value: torch.Tensor) -> torch.Tensor:
        if value.ndim < 2:
            return value.half().float()
        return torch.from_numpy(_dequantize(*quantize_per_channel(value.float().numpy())))

    return {k: rounded(v) if v.is_floating_point() else v for k, v in state.items()}


def _store_compact(path: Path) -> None:
    """Replace each float32 weight that int8 per channel (matrices, filters) or float16 holds exactly
    by that copy and a DequantizeLinear or Cast node (folded when ONNX Runtime loads the file)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    widen, keep = [], []
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT:  # shapes and other constants the exporter made
            keep.append(init)
            continue
        if value.ndim >= 2 and np.array_equal(_dequantize(*(q := quantize_per_channel(value))), value):
            parts = [numpy_helper.from_array(q[0], f"{init.name}__int8"),
                     numpy_helper.from_array(q[1], f"{init.name}__scale"),
                     numpy_helper.from_array(np.zeros(len(value), np.int8), f"{init.name}__zero")]  # fmt: skip
            widen.append(helper.make_node("DequantizeLinear", [p.name for p in parts], [init.name], axis=0))
        elif np.array_equal(value.astype(np.float16), value):
            parts = [numpy_helper.from_array(value.astype(np.float16), f"{init.name}__fp16")]
            widen.append(helper.make_node("Cast", [parts[0].name], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            parts = [init]
        keep.extend(parts)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = widen + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(proto, str(path))


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The float32 weights (by state-dict name) and the metadata of an ONNX file written with
    ``compact``: how PyTorch loads a shipped model."""
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
        meta = json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    except Exception as e:  # protobuf and JSON raise their own types for damaged files
        raise CheckpointError(f"{path}: not an EmoTorch ONNX file ({type(e).__name__}: {e})") from None
    stored = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    weights, widened = {}, set()
    for node in proto.graph.node:
        if node.op_type == "Cast" and node.input[0] in stored:
            weights[node.output[0]] = stored[node.input[0]].astype(np.float32)
        elif node.op_type == "DequantizeLinear" and node.input[0] in stored:
            weights[node.output[0]] = _dequantize(stored[node.input[0]], stored[node.input[1]])
        else:
            continue
        widened.update(node.input)
    weights |= {k: v for k, v in stored.items() if v.dtype == np.float32 and k not in widened}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, meta


def set_metadata(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Store the model's metadata (preprocessing, temperature, metrics, provenance) in an ONNX file's
    ``emotorch`` metadata entry."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    # the graph's digest, checked on every load (OnnxModel.metadata): damaged weights are refused
    digest = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    entry.value = json.dumps({k: v for k, v in meta.items() if k != "graph_sha256"} | {"graph_sha256": digest})
    onnx.save(proto, str(path))
    if graph_digest(path) != digest:  # the digest must describe the bytes as written, or every load fails
        raise CheckpointError(f"{path}: the graph written is not the graph digested")


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
                {"faces": normalize(calibration[i : i + 64], meta["mean"], meta["std"])}
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
    """A PyTorch model on an inference engine: ``torch`` or None (as it is); ``onnx`` (ONNX Runtime);
    ``auto`` (ONNX Runtime where it loads, else PyTorch). A model already on ONNX Runtime stays there."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if isinstance(model.model, OnnxModel) or backend in (None, "torch"):
        return model
    try:
        return onnx_backend(model)
    except Exception as e:  # auto: any failure to export or load falls back to PyTorch
        if backend == "onnx":
            raise
        log.warning("ONNX Runtime unavailable (%s); serving with PyTorch", e)
        return model
