"""Checkpoints: one dict of tensors and plain data, written atomically, read with weights_only.

A checkpoint holds ``model`` (the state dict), ``meta`` (the model's card as
:meth:`emotorch.runtime.card.ModelCard.to_dict` writes it: everything that rebuilds the model
and its preprocessing, with data summary, metrics and versions) and ``history``; ``last.pt``
also holds the optimizer, scheduler and epoch to resume.
``weights_sha256`` (written since 0.1.0's hardening) lets :func:`load` tell damaged weights from
good ones; for older files it checks that every weight is finite.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import emotorch
from emotorch.errors import CheckpointError
from emotorch.runtime.card import ModelCard
from emotorch.training.models import create_model

FORMAT = "emotorch.checkpoint/1"  # the tag of every checkpoint written since 0.1.0


def versions() -> dict[str, str]:
    return {
        "emotorch": emotorch.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write atomically (a kill mid-write leaves the previous file intact), with the weights' sha256."""
    path = Path(path)
    if isinstance(obj.get("model"), dict):
        obj = {**obj, "weights_sha256": weights_digest(obj["model"])}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a checkpoint file can never run code."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an EmoTorch checkpoint (no {FORMAT!r} format tag)")
    check(ckpt, path)
    return ckpt


def check(ckpt: dict[str, Any], source: str | Path) -> None:
    """Raise :class:`CheckpointError` for damaged weights (a sha256 mismatch, NaN or infinite
    values) or metadata that cannot rebuild the model."""
    state, meta = ckpt.get("model"), ckpt.get("meta")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: damaged checkpoint (no weights)")
    ModelCard.from_dict(meta, source)  # raises for metadata that cannot rebuild the model
    recorded = ckpt.get("weights_sha256")
    if recorded is not None and recorded != weights_digest(state):
        raise CheckpointError(f"{source}: damaged checkpoint (the weights do not match their recorded sha256)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: damaged checkpoint ({bad[0]} holds NaN or infinite values)")


def build_model(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the model a checkpoint (or a shipped ONNX file's weights) describes and load its weights,
    in eval mode. Batch norm's step counters may be absent: inference never reads them."""
    card = ModelCard.from_dict(ckpt["meta"], source)
    try:
        model = create_model(card.architecture, len(card.classes), **card.options)
        loaded = model.load_state_dict(ckpt["model"], strict=False)
        missing = [k for k in loaded.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or loaded.unexpected_keys:
            raise RuntimeError(f"weights missing {missing[:3]}, unexpected {loaded.unexpected_keys[:3]}")
    except (RuntimeError, KeyError, TypeError, ValueError) as e:  # shapes, names or options that do not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{source}: the weights do not fit the model {card.architecture!r} ({first})") from None
    return model.eval()


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {sys.platform}"
