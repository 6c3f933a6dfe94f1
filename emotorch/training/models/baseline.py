"""The hackathon seed's small CNN, trained from scratch: the reference point for every result."""

from __future__ import annotations

from torch import nn

from emotorch.training.models.registry import register


@register("baseline", "the seed's small from-scratch CNN (4 convs, 1024-unit head)")
def baseline(*, num_classes: int = 7, pretrained=None, dropout: float = 0.5) -> nn.Module:
    """Four valid-padded 3x3 convs (32-64-128-128) and a 1024-unit dense head, as in the seed."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout / 2),  # 44 -> 22
        nn.Conv2d(64, 128, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # 20 -> 10
        nn.Conv2d(128, 128, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout / 2),  # 8 -> 4
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 1024),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(1024, num_classes),
    )
