"""Checkpoints: one dict of tensors and plain data, written atomically, read with weights_only.

A checkpoint holds ``model`` (the state dict), ``meta`` (everything needed to rebuild the model
and its preprocessing: name, options, classes, input size, mean/std, data summary, metrics,
versions) and ``history``; ``last.pt`` also holds the optimizer, scheduler and epoch to resume.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import emotorch
from emotorch.models import create_model

FORMAT = "emotorch.checkpoint/1"


class CheckpointError(ValueError):
    """A file is not a usable EmoTorch checkpoint; the message names it and says why."""


def versions() -> dict[str, str]:
    return {
        "emotorch": emotorch.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a kill mid-write leaves the previous file intact."""
    path = Path(path)
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
    return ckpt


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode."""
    meta = ckpt["meta"]
    model = create_model(meta["model"], len(meta["classes"]), **meta["model_options"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {sys.platform}"
