"""EmoTorch: facial emotion recognition that agrees with people (FER+ crowd votes): ONNX Runtime
inference, PyTorch training (the ``train`` extra).

The names below load on first use (PEP 562), so importing one light module, such as
``emotorch.runtime.images`` in a worker process, does not import PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_HOMES = {
    "emotorch.choices": ("CLASSES", "FERPLUS_CLASSES"),
    "emotorch.errors": ("DataError",),
    "emotorch.training.data": ("Dataset", "FaceSet", "load_dataset"),
    "emotorch.training.evaluate": ("compute_metrics", "evaluate"),
    "emotorch.runtime.card": ("ModelCard",),
    "emotorch.runtime.classifier": ("Classifier",),
    "emotorch.runtime.registry": ("load_model",),
    "emotorch.training.models": ("create_model", "list_models"),
    "emotorch.runtime.pipeline": ("EmotionRecognizer", "FaceResult"),
    "emotorch.training.config": ("TrainConfig", "config_from_preset"),
    "emotorch.training.train": ("train",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = ["__version__", *sorted(_HOME_OF)]


def __getattr__(name: str) -> object:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'emotorch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
