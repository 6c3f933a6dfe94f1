"""A trained network with a second head for the expressive reading (:mod:`emotorch.runtime.reading`).

The network's own logits (the crowd's reading of a face, learned from FER+ votes) pass through
unchanged; a linear head on the same pooled features, fitted afterwards on FER2013's single labels
(the expression a face was meant to show) by :func:`emotorch.training.packaging.fit_expressive_head`,
gives a second output: the log of the two heads' probabilities blended, plus per-class offsets. Its
largest entry is the expressive answer. One network, one pass: the extra head costs a matrix product.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from emotorch.training.models.emonet import EmoNet
from emotorch.training.models.ensemble import Ensemble, mean_log_probs
from emotorch.training.models.registry import create_model, register


def pooled(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(pooled features, logits) of an EmoNet or an ensemble of them (the members' features side by side)."""
    if isinstance(net, Ensemble):
        parts = [pooled(m, x) for m in net.members]
        return torch.cat([f for f, _ in parts], 1), mean_log_probs([logits for _, logits in parts])
    if isinstance(net, EmoNet):
        features = net.head[:2](net.features(x))  # average pooling and flatten, before dropout and the classifier
        return features, net.head[2:](features)
    raise ValueError(f"an expressive head needs an emonet or an ensemble of them, not {type(net).__name__}")


def feature_size(net: nn.Module) -> int:
    """The width of :func:`pooled`'s features."""
    if isinstance(net, Ensemble):
        return sum(feature_size(m) for m in net.members)
    if isinstance(net, EmoNet):
        return net.head[-1].in_features
    raise ValueError(f"an expressive head needs an emonet or an ensemble of them, not {type(net).__name__}")


class WithExpressiveHead(nn.Module):
    """``base``'s logits and the expressive scores: log((1 - blend) p_base + blend p_head) + offsets."""

    def __init__(self, base: nn.Module, num_classes: int, blend: float) -> None:
        super().__init__()
        self.base = base
        self.blend = blend
        self.expressive = nn.Linear(feature_size(base), num_classes)
        self.register_buffer("offsets", torch.zeros(num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features, logits = pooled(self.base, x)
        logits = logits.float()
        mixed = (1 - self.blend) * logits.softmax(-1) + self.blend * self.expressive(features.float()).softmax(-1)
        return logits, mixed.clamp_min(1e-9).log() + self.offsets


@register("expressive", "a trained network with a second head for the expressive reading", listed=False)
def expressive(
    *, num_classes: int = 7, pretrained=None, base: dict[str, Any] | None = None, blend: float = 0.7
) -> nn.Module:
    if not base:
        raise ValueError("an expressive model needs its base network: {'model': name, 'model_options': {...}}")
    network = create_model(base["model"], num_classes, **base.get("model_options", {}))
    return WithExpressiveHead(network, num_classes, blend)
