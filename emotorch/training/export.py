"""ONNX export: float32, compact (the shipped weights' precision) or int8 calibrated on training faces."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from emotorch.errors import CheckpointError
from emotorch.runtime.card import ModelCard
from emotorch.runtime.session import METADATA_KEY, graph_digest
from emotorch.training.data import FaceSet

CALIBRATION_FACES = 2048  # training faces that calibrate an int8 model's activation ranges


def export_onnx(module: nn.Module, card: ModelCard, path: str | os.PathLike, *, compact: bool = False) -> Path:
    """Write the model as one ONNX file (input ``faces`` (N, 1, 48, 48), output ``logits`` and, with an
    expressive head, ``expressive``), batch size dynamic; an ensemble becomes one graph.

    The model's card (classes, input size, mean/std, temperature, provenance) travels in the
    file's metadata as JSON under ``emotorch``, so the ONNX file is usable on its own. With
    ``compact`` (shipped models, whose weights are rounded by :func:`shipped_precision` already)
    each weight is stored in the fewest bits that hold it exactly and widened to float32 when the
    session loads: a quarter of the file, the same numbers, and :func:`read_weights` gets them back.
    """
    path = Path(path)
    net = module.float().eval().cpu()
    example = torch.zeros(2, *card.input_size)
    batch = torch.export.Dim("batch")
    # compact: the graph unoptimised, its weights named as in the state dict (ONNX Runtime folds batch norm)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["faces"],
        output_names=list(card.outputs),
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        optimize=not compact,
        verbose=False,
    )
    if compact:
        _store_compact(path)
    set_metadata(path, card)
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
    proto = onnx.load(str(path))
    graph = proto.graph
    widen, keep = [], []
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT:  # shapes and other constants the exporter made
            keep.append(init)
            continue
        if value.ndim >= 2 and np.array_equal(_dequantize(*(q := quantize_per_channel(value))), value):
            parts = [
                numpy_helper.from_array(q[0], f"{init.name}__int8"),
                numpy_helper.from_array(q[1], f"{init.name}__scale"),
                numpy_helper.from_array(np.zeros(len(value), np.int8), f"{init.name}__zero"),
            ]
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


def set_metadata(path: str | os.PathLike, card: ModelCard) -> None:
    """Store the model's card (preprocessing, temperature, metrics, provenance) in an ONNX file's
    ``emotorch`` metadata entry, with the digest of its graph."""
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    # the graph's digest, checked on every load (OnnxModel.metadata): damaged weights are refused
    digest = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    entry.value = json.dumps(card.to_dict() | {"graph_sha256": digest})
    onnx.save(proto, str(path))
    if graph_digest(path) != digest:  # the digest must describe the bytes as written, or every load fails
        raise CheckpointError(f"{path}: the graph written is not the graph digested")


def calibration_sample(train: FaceSet, n: int = CALIBRATION_FACES) -> np.ndarray:
    """A seeded sample of training faces (uint8 (n, 48, 48)) to calibrate int8 activation ranges."""
    pick = np.random.default_rng(0).choice(len(train), min(n, len(train)), replace=False)
    return train.images[np.sort(pick)]


def quantize_onnx(module: nn.Module, card: ModelCard, path: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Write the model as int8 ONNX: weights quantised per channel, activation ranges calibrated on
    ``calibration`` (uint8 faces (N, 48, 48), e.g. a sample of the training split). On CPUs with
    VNNI this classifies about 3x faster than float32 (benchmarks/accuracy.py)."""

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = (
                {"faces": card.preprocess(calibration[i : i + 64])} for i in range(0, len(calibration), 64)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        export_onnx(module, card, fp32)
        quant_pre_process(str(fp32), str(prepared))  # shape inference and graph folding first
        quantize_static(
            str(prepared),
            str(path),
            Faces(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    set_metadata(path, card)
    return path
