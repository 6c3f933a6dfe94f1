"""Ensemble: several trained networks behind one model, their log-probabilities averaged.

Built from the members' registry names and options, so a packaged ensemble is one checkpoint
that loads with ``weights_only=True`` like any other model; the members must share the input
(48x48 FER-normalised faces), which :func:`emotorch.training.packaging.package` checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from emotorch.training.models.registry import create_model, register


def mean_log_probs(logits: Sequence[Tensor]) -> Tensor:
    """The members' mean log-probability: a geometric mean of their probabilities, itself logits."""
    return torch.stack([z.float().log_softmax(-1) for z in logits]).mean(0)


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return mean_log_probs([m(x) for m in self.members])


@register("ensemble", "several trained models averaged (members: [{model, model_options}, ...])", listed=False)
def ensemble(*, num_classes: int = 7, pretrained=None, members: list[dict[str, Any]] | None = None) -> nn.Module:
    if not members:
        raise ValueError("an ensemble needs members: a list of {'model': name, 'model_options': {...}}")
    return Ensemble([create_model(m["model"], num_classes, **m.get("model_options", {})) for m in members])
