"""Transfer-learning models: torchvision backbones with the seed's head (1024 hidden, ReLU, dropout).

The model takes the same FER-normalised (N, 1, 48, 48) input as every other model and turns it
into what an ImageNet backbone expects (three channels, ImageNet statistics, ``input_size``)
inside ``forward``. ImageNet weights are read from a file the user names; nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from emotorch.runtime.images import FER_MEAN, FER_STD
from emotorch.training.models.registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TransferNet(nn.Module):
    """An ImageNet backbone producing a feature map, then pooling and the seed's dense head."""

    def __init__(
        self, backbone: nn.Module, n_features: int, num_classes: int, input_size: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(n_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x * FER_STD + FER_MEAN  # back to [0, 1] gray
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.head(self.backbone(x))


def _read_weights(path: str | Path) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"pretrained weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise ValueError(f"pretrained weights file {path} is not a PyTorch state dict: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


# Older torchvision DenseNet files name layers "norm.1"; the current modules say "norm1".
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _build(
    arch: str,
    classifier: str,
    extract: Callable[[nn.Module], tuple[nn.Module, int]],
    num_classes: int,
    pretrained: str | Path | None,
    input_size: int,
    hidden: int,
    dropout: float,
) -> TransferNet:
    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained is not None:
        state = _read_weights(pretrained)
        if arch.startswith("densenet"):
            state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"pretrained weights {pretrained} do not fit {arch}: {e}") from None
        missing = [k for k in missing if not k.startswith(classifier + ".")]
        if missing or unexpected:
            raise ValueError(
                f"pretrained weights {pretrained} do not fit {arch}: "
                f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
            )
    backbone, n_features = extract(net)
    return TransferNet(backbone, n_features, num_classes, input_size, hidden, dropout)


def _vgg_features(net: nn.Module) -> tuple[nn.Module, int]:
    return net.features, 512


def _resnet_features(net: nn.Module) -> tuple[nn.Module, int]:
    children = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4]
    return nn.Sequential(*children), net.fc.in_features


def _densenet_features(net: nn.Module) -> tuple[nn.Module, int]:
    return nn.Sequential(net.features, nn.ReLU(inplace=True)), net.classifier.in_features


def _register(arch: str, classifier: str, extract: Callable[[nn.Module], tuple[nn.Module, int]]) -> None:
    def builder(
        *,
        num_classes: int = 7,
        pretrained: str | Path | None = None,
        input_size: int = 48,
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> nn.Module:
        return _build(arch, classifier, extract, num_classes, pretrained, input_size, hidden, dropout)

    register(arch, f"torchvision {arch} with the seed's 1024-unit head", f"torchvision {arch} ImageNet")(builder)


_register("vgg16", "classifier", _vgg_features)
_register("vgg19", "classifier", _vgg_features)
_register("resnet50", "fc", _resnet_features)
_register("densenet121", "classifier", _densenet_features)
