"""A model ready to classify faces: a network that maps normalised faces to logits, and its card.

:class:`Classifier` applies its own card (normalisation, test-time views, temperature), so every
consumer (photos, video, analyse, the server, evaluation, packaging) gets the same probabilities
for the same face by calling :meth:`Classifier.predict_proba`. The network is an ONNX Runtime
session (:class:`emotorch.runtime.session.OnnxModel`) or, with the ``train`` extra, a PyTorch module
wrapped by :class:`emotorch.training.loading.TorchNet`; nothing here imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.errors import CheckpointError
from emotorch.runtime.card import ModelCard
from emotorch.runtime.reading import answer

# ten-crop: reflect-pad by 2 px, take 48x48 crops at the corners and centre, and flip. On val a 2 px shift
# beat 4 px for every trained run and 26 of 31 ensembles of them (docs/MODEL_CARD.md, "Test-time augmentation").
TTA_PAD = 2

Net = Callable[[np.ndarray], dict[str, np.ndarray]]  # normalised faces (N, C, H, W) float32 -> {output: (N, K)}


def tta_views(x: np.ndarray, pad: int = TTA_PAD) -> list[np.ndarray]:
    """Ten views of a (N, C, H, W) batch: 5 crops of a copy reflect-padded by ``pad``, each also flipped."""
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    offsets = ((0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad), (pad, pad))
    crops = [padded[..., i : i + h, j : j + w] for i, j in offsets]
    return crops + [c[..., ::-1] for c in crops]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class Classifier:
    """A network and its card; ``source`` names where it came from, ``onnx`` is its ONNX file when it has
    one, ``history`` the training log of a checkpoint."""

    net: Net
    card: ModelCard
    source: str
    onnx: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def name(self) -> str:
        """A shipped model's name, else where the model came from."""
        return self.card.name or self.source

    def predict_outputs(
        self,
        faces: np.ndarray,
        *,
        tta: bool | None = None,
        tta_pad: int = TTA_PAD,
        batch_size: int = 256,
        progress: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Each of the network's outputs (N, K; :attr:`ModelCard.outputs`) for uint8 faces (N, H, W), averaged
        over the test-time views; ``tta``: None for the card's own setting. ``progress``: a progress bar with
        this title on stderr (where it is a terminal)."""
        tta = self.card.tta if tta is None else tta
        batches: list[dict[str, np.ndarray]] = []
        bar = None
        if progress:  # only evaluation asks: video frames and server batches make no bar
            from tqdm import tqdm  # the hot path (video frames, server batches) never imports it

            bar = tqdm(total=len(faces), desc=progress, unit=" face", leave=False)
        for i in range(0, len(faces), batch_size):
            if bar is not None:
                bar.update(min(batch_size, len(faces) - i))
            x = self.card.preprocess(faces[i : i + batch_size])
            views = [self.net(v) for v in (tta_views(x, tta_pad) if tta else [x])]
            batches.append({k: np.mean([v[k] for v in views], axis=0, dtype=np.float32) for k in views[0]})
        if bar is not None:
            bar.close()
        names = batches[0].keys() if batches else self.card.outputs
        empty = np.zeros((0, len(self.card.classes)), np.float32)
        outputs = {k: np.concatenate([empty] + [b[k] for b in batches]) for k in names}
        if not all(np.isfinite(v).all() for v in outputs.values()):
            raise CheckpointError(f"{self.source}: the model answered NaN or infinity: its weights are damaged")
        return outputs

    def predict_logits(self, faces: np.ndarray, **kw: Any) -> np.ndarray:
        """Logits (N, K) of uint8 faces (N, H, W) (``kw``: :meth:`predict_outputs`'s options)."""
        return self.predict_outputs(faces, **kw)["logits"]

    def predict_proba(self, faces: np.ndarray, *, tta: bool | None = None, progress: str | None = None) -> np.ndarray:
        """Calibrated class probabilities (N, K): the softmax of the logits over the card's temperature."""
        return softmax(self.predict_logits(faces, tta=tta, progress=progress), self.card.temperature)

    def predict(
        self, faces: np.ndarray, *, tta: bool | None = None, reading: str = "crowd", progress: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities (N, K), each face's answer under ``reading``), from one pass of the network."""
        return self.read(self.predict_outputs(faces, tta=tta, progress=progress), reading)

    def read(self, outputs: dict[str, np.ndarray], reading: str = "crowd") -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, answers under ``reading``) from the network's :meth:`predict_outputs`."""
        probs = softmax(outputs["logits"], self.card.temperature)
        return probs, answer(probs, self.classes, reading, self.card.expressive_threshold, outputs.get("expressive"))

    def checked(self) -> Classifier:
        """This classifier, once it has answered a plain grey face with finite logits (damaged weights do not)."""
        self.predict_logits(np.full((1, *self.card.input_size[1:]), 128, np.uint8), tta=False)
        return self
