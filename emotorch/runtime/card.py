"""What a model is: its card (classes, input, normalisation, calibration, test-time views, provenance).

A :class:`ModelCard` travels with every model, as a dict in PyTorch checkpoints and as JSON in the
``emotorch`` metadata entry of ONNX files; :meth:`ModelCard.from_dict` and :meth:`ModelCard.to_dict`
are the only code that reads or writes those keys, and every consumer derives its preprocessing
from the card (timm's ``PretrainedCfg``, torchvision's ``Weights`` play this part there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotorch.errors import CheckpointError
from emotorch.runtime.images import normalize

REQUIRED = ("model", "model_options", "classes", "input_size", "mean", "std")  # what rebuilding a model needs
_FIELD_OF_KEY = {"model": "architecture", "model_options": "options"}  # stored names that differ from the field
FILE_KEYS = ("graph_sha256",)  # what an ONNX file stores about itself (emotorch.runtime.session), not the model
# a network's outputs, in order: the logits and, for a model with an expressive head, its scores (both (N, K))
OUTPUTS = ("logits", "expressive")


@dataclass(frozen=True)
class ModelCard:
    """A model's card. ``provenance`` keeps every other stored key (data, recipe, config, hardware,
    versions, ensemble members, calibration, licence, ...) as written, so a card reads back whole."""

    architecture: str  # the model registry's name (emotorch.training.models): "ensemble", "expressive" for composites
    options: Mapping[str, Any]  # keyword arguments that rebuild the architecture
    classes: tuple[str, ...]
    input_size: tuple[int, int, int]  # channels, height, width
    mean: float  # normalisation of pixels scaled to [0, 1]
    std: float
    temperature: float = 1.0  # logits are divided by it before the softmax (fitted on val when packaged)
    tta: bool = False  # average ten test-time views (emotorch.runtime.classifier.tta_views)
    expressive_threshold: float | None = None  # the expressive reading of a model without an expressive head
    name: str | None = None  # a shipped model's name
    parameters: int | None = None
    val_metrics: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, meta: Any, source: object = "model") -> ModelCard:
        """The card stored as ``meta``; :class:`CheckpointError` naming ``source`` for one that cannot be."""
        missing = [k for k in REQUIRED if not isinstance(meta, Mapping) or k not in meta]
        if missing:
            raise CheckpointError(f"{source}: damaged (its metadata lacks {', '.join(missing)})")
        names = {f.name for f in dataclasses.fields(cls)} - {"provenance"}
        known = {_FIELD_OF_KEY.get(k, k): v for k, v in meta.items() if _FIELD_OF_KEY.get(k, k) in names}
        try:
            known |= {
                "classes": tuple(known["classes"]),
                "input_size": tuple(int(v) for v in known["input_size"]),
                "mean": float(known["mean"]),
                "std": float(known["std"]),
                "temperature": float(known.get("temperature", 1.0)),
                "tta": bool(known.get("tta", False)),
            }
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: damaged (its metadata: {e})") from None
        rest = {k: v for k, v in meta.items() if _FIELD_OF_KEY.get(k, k) not in names and k not in FILE_KEYS}
        return cls(**known, provenance=rest)

    def to_dict(self) -> dict[str, Any]:
        """The card as stored: JSON-ready, unset optional fields left out."""
        stored = {
            "model": self.architecture,
            "model_options": dict(self.options),
            "classes": list(self.classes),
            "input_size": list(self.input_size),
            "mean": self.mean,
            "std": self.std,
        }
        for f in dataclasses.fields(self):
            if f.name not in (*REQUIRED, *_FIELD_OF_KEY.values(), "provenance"):
                value = getattr(self, f.name)
                if value is not None:
                    stored[f.name] = value
        return dict(self.provenance) | stored

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed; provenance keys (``recipe=...``) go into ``provenance``."""
        names = {f.name for f in dataclasses.fields(self)}
        extra = {k: v for k, v in changes.items() if k not in names}
        fields = {k: v for k, v in changes.items() if k in names}
        if extra:
            fields["provenance"] = dict(fields.get("provenance", self.provenance)) | extra
        return dataclasses.replace(self, **fields)

    @property
    def expressive_head(self) -> bool:
        """Whether the network has a second output for the expressive reading (``expressive``, beside ``logits``)."""
        return self.architecture == "expressive"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the network's outputs (:data:`OUTPUTS`): ``logits``, and ``expressive`` with a head."""
        return OUTPUTS[: 1 + self.expressive_head]

    @property
    def reads_expressive(self) -> bool:
        """Whether the model can be read ``expressive``: it has an expressive head or a threshold."""
        return self.expressive_head or self.expressive_threshold is not None

    @property
    def base(self) -> ModelCard:
        """The card of the network under an expressive head (this card, for a model without one)."""
        if not self.expressive_head:
            return self
        base = self.options["base"]
        return self.replace(architecture=base["model"], options=base.get("model_options", {}))

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, H, W) as this model takes them: float32 (N, 1, H, W), normalised."""
        return normalize(np.asarray(faces), self.mean, self.std)
