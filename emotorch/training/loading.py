"""PyTorch models as classifiers: checkpoints, shipped weights read back into PyTorch, and moving a
PyTorch model onto ONNX Runtime. :func:`emotorch.runtime.registry.load_model` hands PyTorch models
here; everything else reaches them through :class:`emotorch.runtime.classifier.Classifier`."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotorch.runtime import registry
from emotorch.runtime.card import OUTPUTS, ModelCard
from emotorch.runtime.classifier import Classifier
from emotorch.runtime.session import OnnxModel
from emotorch.training import checkpoint
from emotorch.training.data import cache_dir
from emotorch.training.export import export_onnx, read_weights

log = logging.getLogger(__name__)


class TorchNet:
    """A PyTorch module as a classifier's network: normalised numpy faces in, its numpy outputs out (on the CPU,
    in eval mode, set once here rather than on every batch)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.cpu().eval()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)))
        outputs = out if isinstance(out, tuple) else (out,)
        return {name: t.float().numpy() for name, t in zip(OUTPUTS[: len(outputs)], outputs, strict=True)}


def torch_classifier(module: nn.Module, card: ModelCard, source: str, **kw: Any) -> Classifier:
    """A PyTorch module and its card as a :class:`Classifier`."""
    return Classifier(TorchNet(module), card, source, **kw)


def module_of(model: Classifier) -> nn.Module:
    """The PyTorch module of a classifier that runs on PyTorch."""
    if not isinstance(model.net, TorchNet):
        raise ValueError(f"{model.source} runs on ONNX Runtime: its PyTorch weights are not loaded (backend torch)")
    return model.net.module


def load_checkpoint(path: str | os.PathLike, backend: str | None = None) -> Classifier:
    """A checkpoint file or run directory on ``backend`` (see :func:`emotorch.runtime.registry.load_model`)."""
    ckpt = checkpoint.load(path)
    card = ModelCard.from_dict(ckpt["meta"], path)
    model = torch_classifier(checkpoint.build_model(ckpt, path), card, str(path), history=ckpt.get("history", []))
    return serve_with(model, backend)


def load_shipped(name: str) -> Classifier:
    """A shipped model on PyTorch, its weights verified and read back from its compact ONNX file."""
    path = registry.shipped_path(name)
    state, meta = read_weights(path)
    module = checkpoint.build_model({"model": state, "meta": meta}, path)
    return torch_classifier(module, ModelCard.from_dict(meta, path), name, onnx=registry.shipped_path(name, "onnx"))


def onnx_backend(model: Classifier) -> Classifier:
    """The same model served by ONNX Runtime: the ONNX file it ships with (``fast``: int8), or else
    exported once into the cache (keyed by its weights)."""
    if model.onnx is not None:
        return Classifier(OnnxModel(model.onnx), model.card, f"{model.source} (onnx)", model.onnx, model.history)
    digest = hashlib.sha256()
    for name, tensor in sorted(module_of(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{os.getpid()}.{path.name}")
        export_onnx(module_of(model), model.card, tmp)
        os.replace(tmp, path)
    return Classifier(OnnxModel(path), model.card, f"{model.source} (onnx)", Path(path), model.history)


def serve_with(model: Classifier, backend: str | None = None) -> Classifier:
    """A PyTorch model on an inference engine: ``torch`` or None (as it is); ``onnx`` (ONNX Runtime);
    ``auto`` (ONNX Runtime where it loads, else PyTorch)."""
    if isinstance(model.net, OnnxModel) or backend in (None, "torch"):
        return model
    try:
        return onnx_backend(model)
    except Exception as e:  # auto: any failure to export or load falls back to PyTorch
        if backend == "onnx":
            raise
        log.warning("ONNX Runtime unavailable (%s); serving with PyTorch", e)
        return model
