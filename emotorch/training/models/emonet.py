"""EmoNet: a VGG-style CNN with batch norm designed for 48x48 grayscale faces.

Four stages of two 3x3 convs (widths w, 2w, 4w, 8w) halve the resolution 48 -> 3; global
average pooling and dropout feed the classifier. With bf16 autocast and channels_last, width 48
trains a FER2013 epoch in about a minute on 2 CPU cores (benchmarks/train_speed.py).
"""

from __future__ import annotations

from torch import Tensor, nn

from emotorch.training.models.registry import register


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class EmoNet(nn.Module):
    def __init__(self, num_classes: int = 7, width: int = 48, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (width, 2 * width, 4 * width, 8 * width):
            layers += _conv_bn(c_in, c_out) + _conv_bn(c_out, c_out) + [nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)  # (N, 8w, 3, 3)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("emonet", "VGG-style CNN with batch norm for 48x48 faces (the default)")
def emonet(*, num_classes: int = 7, pretrained=None, width: int = 48, dropout: float = 0.3) -> nn.Module:
    return EmoNet(num_classes, width, dropout)
