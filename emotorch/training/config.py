"""The training configuration and its presets: one dataclass whose fields are also `emotorch train`'s
flags (name, type, choices and help), so a setting is declared once. No PyTorch here: the CLI
builds its parser from this module."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from emotorch.choices import AUGMENTS, BALANCES, OPTIMIZERS, SCHEDULES, SELECTS, TARGETS

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "balance": BALANCES,
    "augment": AUGMENTS,
    "select": SELECTS,
    "targets": ("auto", *TARGETS),
}


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A config field that is also a `emotorch train` flag with this help."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run and inside each checkpoint."""

    data: str = _opt("", "training data (any supported format); read from the run when resuming")
    labels: str | None = None  # FER+'s fer2013new.csv for a fer2013.csv `data` (a data flag every command shares)
    targets: str = _opt(
        "auto",
        "with FER+ votes: the majority label, a label drawn from the votes each epoch "
        "(probability), FERPlus's vote distribution (crossentropy) or every emotion vote (soft); "
        "auto: crossentropy with votes, the label without",
    )
    single_labels: str | None = _opt(
        None,
        "FER2013 data (any format) whose single labels join the FER+ votes in "
        "each target; faces are paired by their pixels",
        metavar="DATA",
    )
    label_mix: float = _opt(0.5, "with --single-labels: the share of each target given to the FER2013 label")
    model: str = _opt("emonet", "registry name (see `emotorch models`)")
    model_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "a model builder option, e.g. width=32 (repeatable)",
            "flag": "--model-option",
            "metavar": "KEY=VALUE",
        },
    )
    pretrained: str | None = _opt(None, "local ImageNet weights file for vgg16/vgg19/resnet50/densenet121")
    freeze_backbone: bool = _opt(False, "train only the head (when pretrained weights are given)")
    init: str | None = _opt(
        None,
        "start from the weights of this run, checkpoint or shipped model (NAME#i: "
        "member i of an ensemble); across class sets the shared classes' rows are copied",
        metavar="RUN_OR_MODEL",
    )
    epochs: int = _opt(60, "epochs to train (when resuming: a new total)")
    batch_size: int = _opt(128, "faces per step, split across DDP ranks")
    optimizer: str = _opt("sgd", "optimizer (sgd: Nesterov)")
    lr: float = _opt(0.05, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "weight decay")
    schedule: str = _opt("cosine", "learning rate after the warm-up: cosine decay or constant")
    warmup_epochs: float = _opt(2.0, "linear learning-rate warm-up")
    label_smoothing: float = _opt(0.1, "label smoothing, 0-1")
    balance: str = _opt("none", "class imbalance: class-balanced sampling (sampler) or class-weighted loss (loss)")
    augment: str = _opt(
        "standard",
        "training augmentation: none, flips, the standard set (flip, affine, "
        "light, erasing), or photo: the standard set after gamma, blur and lost resolution, "
        "as camera photos differ from web crops",
    )
    amp: bool = _opt(True, "bf16 autocast on CPU, bf16/fp16 AMP on CUDA", flag="--no-amp")
    channels_last: bool = _opt(True, "channels_last memory format", flag="--no-channels-last")
    train_split: str = _opt("train", "split to train on")
    val_split: str = _opt("val", "split to validate on (held out from the training split when absent)")
    val_fraction: float = _opt(0.1, "stratified share held out when the data has no validation split")
    select: str = _opt("accuracy", "val metric that picks best.pt")
    teacher: str | None = _opt(None, "shipped model, checkpoint or run to distil from (Hinton et al. 2015)")
    distill_alpha: float = _opt(0.5, "weight of the distillation term; 1 - alpha weighs the targets")
    distill_temperature: float = _opt(4.0, "distillation temperature")
    seed: int = _opt(0, "random seed: data order, augmentation and init")
    skip_bad: bool = False  # data flags too
    skip_unknown: bool = False

    def __post_init__(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if not 0 <= self.label_mix <= 1:
            raise ValueError(f"label_mix must be between 0 and 1, not {self.label_mix}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with the closest valid name."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                hint = difflib.get_close_matches(key, names, n=1)
                raise ValueError(f"unknown config key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return cls(**values)


def flags() -> list[tuple[dataclasses.Field, str]]:
    """The config fields that are `emotorch train` flags, with their flag names."""
    return [
        (f, f.metadata.get("flag", "--" + f.name.replace("_", "-")))
        for f in dataclasses.fields(TrainConfig)
        if "help" in f.metadata
    ]


PRESETS: dict[str, dict[str, Any]] = {
    # The hackathon recipe: VGG19 with a 1024-unit head, Adam at 1e-4, batch 64, 25 epochs.
    "seed": dict(
        model="vgg19",
        optimizer="adam",
        lr=1e-4,
        batch_size=64,
        epochs=25,
        weight_decay=0.0,
        schedule="constant",
        warmup_epochs=0.0,
        label_smoothing=0.0,
        augment="flip",
        freeze_backbone=True,
    ),
    # Our from-scratch recipe on 2 CPU cores: EmoNet, SGD + cosine, label smoothing, augmentation
    # (the shipped `fer2013-default` model).
    "default": dict(model="emonet", optimizer="sgd", lr=0.05, batch_size=128, epochs=60),
    # A member of the shipped `fer2013-accurate` ensemble (FER2013's labels): the default recipe, trained
    # longer. Members differ by --seed (and --epochs 200 for one).
    "fer2013-accurate": dict(model="emonet", optimizer="sgd", lr=0.05, batch_size=128, epochs=80),
    # `fer2013-fast`: a narrower EmoNet distilled from `fer2013-accurate`, shipped as int8 ONNX.
    "fer2013-fast": dict(
        model="emonet",
        model_options={"width": 40},
        optimizer="sgd",
        lr=0.05,
        batch_size=128,
        epochs=60,
        teacher="fer2013-accurate",
    ),
    # A member of the shipped `accurate` ensemble (FER+ votes): a `fer2013-accurate` member fine-tuned on
    # FERPlus's vote distributions. The other member: --init fer2013-accurate#1 --seed 1.
    "accurate": dict(
        model="emonet",
        optimizer="sgd",
        lr=0.02,
        batch_size=128,
        epochs=25,
        warmup_epochs=1.0,
        label_smoothing=0.05,
        targets="crossentropy",
        init="fer2013-accurate#0",
    ),
    # The shipped `fast` model (FER+ votes): `fer2013-fast` fine-tuned the same way, then int8.
    "fast": dict(
        model="emonet",
        model_options={"width": 40},
        optimizer="sgd",
        lr=0.02,
        batch_size=128,
        epochs=18,
        warmup_epochs=1.0,
        label_smoothing=0.05,
        targets="crossentropy",
        init="fer2013-fast",
    ),
}


def config_from_preset(preset: str, **overrides: Any) -> TrainConfig:
    """A preset's config with ``overrides`` on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[preset], **overrides})
