"""ONNX export and an ONNX Runtime backend that drops in where a PyTorch model is used."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from emotorch.data import cache_dir
from emotorch.evaluate import LoadedModel


def export_onnx(model: LoadedModel, path: str | os.PathLike) -> Path:
    """Write the model as ONNX (input ``faces`` (N, 1, 48, 48), output ``logits``), batch size dynamic.

    The checkpoint's metadata (classes, input size, mean/std, temperature) travels in the
    file's metadata as JSON under ``emotorch``, so the ONNX file is usable on its own.
    """
    import onnx

    path = Path(path)
    net = model.model.float().eval().cpu()
    example = torch.zeros(2, *model.meta["input_size"])
    batch = torch.export.Dim("batch")
    torch.onnx.export(net, (example,), str(path), input_names=["faces"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), dynamo=True, verbose=False)  # fmt: skip
    proto = onnx.load(str(path))
    keys = ("model", "model_options", "classes", "input_size", "mean", "std", "temperature")
    entry = proto.metadata_props.add()
    entry.key, entry.value = "emotorch", json.dumps({k: model.meta[k] for k in keys if k in model.meta})
    onnx.save(proto, str(path))
    return path


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call that inference code already makes."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # idle worker threads must not spin: the face detector shares the same few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: Tensor) -> Tensor:
        faces = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"faces": faces})[0])


def onnx_backend(model: LoadedModel) -> LoadedModel:
    """The same model served by ONNX Runtime, exported once into the cache (keyed by its weights)."""
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
