"""Model registry: ``create_model(name, num_classes, pretrained)`` over small builder functions.

Every model takes FER-normalised grayscale faces of shape (N, 1, 48, 48) and returns logits in
the canonical class order; transfer models adapt the input (to RGB, ImageNet statistics and
their input size) inside themselves, so every consumer feeds them the same tensor.
"""

from __future__ import annotations

# importing the families fills the registry
from emotorch.training.models import baseline, emonet, ensemble, expressive, transfer  # noqa: F401
from emotorch.training.models.registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_options,
    register,
)

__all__ = ["ModelInfo", "count_parameters", "create_model", "list_models", "model_options", "register"]
