"""The architecture registry: names -> builder functions, filled by the family modules as they are imported."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model family before it is built."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    pretrained_source: str | None = None  # the weights a ``pretrained`` file must hold
    listed: bool = True  # False for composites (ensembles) that are packaged, not trained


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, description: str, pretrained_source: str | None = None, *, listed: bool = True):
    """Decorator adding a builder ``fn(*, num_classes, pretrained, **options)`` to the registry."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelInfo(name, fn, description, pretrained_source, listed)
        return fn

    return wrap


def list_models() -> list[ModelInfo]:
    """The models that can be trained (composites such as ensembles are built by packaging)."""
    return [m for m in _REGISTRY.values() if m.listed]


def model_options(name: str) -> dict[str, object]:
    """The options a model accepts beyond num_classes/pretrained, with their defaults."""
    sig = inspect.signature(_info(name).builder)
    return {p.name: p.default for p in sig.parameters.values() if p.name not in ("num_classes", "pretrained")}


def create_model(
    name: str,
    num_classes: int = 7,
    pretrained: str | Path | None = None,
    **options: object,
) -> nn.Module:
    """Build a registered model; ``pretrained`` is a local weights file (never downloaded)."""
    info = _info(name)
    allowed = model_options(name)
    for key in options:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise ValueError(
                f"model {name!r} has no option {key!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else f"; options: {', '.join(allowed)}")
            )
    if pretrained is not None and info.pretrained_source is None:
        raise ValueError(f"model {name!r} is trained from scratch and takes no pretrained weights")
    return info.builder(num_classes=num_classes, pretrained=pretrained, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, _REGISTRY, n=1)
        raise ValueError(
            f"unknown model {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(_REGISTRY)}")
        )
    return _REGISTRY[name]
