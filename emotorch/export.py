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
from emotorch.inference import METADATA_KEY, LoadedModel, OnnxModel

log = logging.getLogger(__name__)

# what an ONNX file carries, so that it is usable (and its model described) without the checkpoint
METADATA_KEYS = ("name", "model", "model_options", "classes", "input_size", "mean", "std", "temperature", "tta",
                 "parameters", "val_metrics", "recipe", "licence")  # fmt: skip
CALIBRATION_FACES = 2048  # training faces that calibrate an int8 model's activation ranges


def export_onnx(model: LoadedModel, path: str | os.PathLike, *, half_weights: bool = False) -> Path:
    """Write the model as one ONNX file (input ``faces`` (N, 1, 48, 48), output ``logits``), batch size
    dynamic; an ensemble becomes one graph.

    The checkpoint's metadata (classes, input size, mean/std, temperature) travels in the
    file's metadata as JSON under ``emotorch``, so the ONNX file is usable on its own. With
    ``half_weights`` (shipped models, whose weights are float16 already) the weights are stored as
    float16 and cast to float32 when the session loads: half the file, the same numbers.
    """
    path = Path(path)
    net = model.model.float().eval().cpu()
    example = torch.zeros(2, *model.meta["input_size"])
    batch = torch.export.Dim("batch")
    # half_weights: the graph unoptimised, its weights as trained (ONNX Runtime folds batch norm when it loads)
    torch.onnx.export(net, (example,), str(path), input_names=["faces"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), dynamo=True, external_data=False, optimize=not half_weights,
                      verbose=False)  # fmt: skip
    if half_weights:
        _store_half(path)
    set_metadata(path, model.meta)
    return path


def _store_half(path: Path) -> None:
    """Replace each float32 weight that float16 holds exactly by a float16 copy and a Cast node (folded
    when ONNX Runtime loads the file): no number changes."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    casts, keep = [], []
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        # only weights that float16 holds exactly (constants the exporter derived from them stay float32)
        if init.data_type != onnx.TensorProto.FLOAT or not np.array_equal(value.astype(np.float16), value):
            keep.append(init)
            continue
        half = numpy_helper.from_array(value.astype(np.float16), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(proto, str(path))


def set_metadata(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Store the model's preprocessing and temperature in an ONNX file's ``emotorch`` metadata entry."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({k: meta[k] for k in METADATA_KEYS if k in meta})
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
