"""Training targets, all in one place: what ``--targets`` means for the data at hand (``auto`` resolved,
modes that need FER+ votes refused on single labels), FER2013's single labels mixed into FER+'s
votes, and the label ``probability`` draws from the votes each epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from emotorch.choices import FERPLUS_CLASSES, TARGETS
from emotorch.errors import DataError
from emotorch.training.data import FaceSet, majority


def resolve(mode: str, faces: FaceSet) -> str:
    """``mode`` for these faces: ``auto`` is ``crossentropy`` with FER+ votes and ``majority`` with single
    labels; a mode that needs votes on faces without them is an error, not a silent fallback."""
    if mode != "auto" and mode not in TARGETS:
        raise ValueError(f"targets must be auto or one of {', '.join(TARGETS)}, not {mode!r}")
    if faces.votes is not None:
        return "crossentropy" if mode == "auto" else mode
    if mode not in ("auto", "majority"):
        raise DataError(
            f"--targets {mode} needs FER+ votes (the FERPlus layout, or --labels fer2013new.csv); "
            "these faces carry one label each"
        )
    return "majority"


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    """float32 one-hot rows (N, n) of class indices; an unlabeled face (-1) gets a row of zeros."""
    return np.eye(n, dtype=np.float32)[np.maximum(labels, 0)] * (labels >= 0)[:, None]


def vote_targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Training targets (N, 8) over :data:`FERPLUS_CLASSES` and which faces to train on.

    ``majority``: the majority answer, one-hot. ``crossentropy`` and ``probability`` (drawn once
    per epoch by the trainer): FERPlus's distribution (single votes dropped, the top one to three
    answers covering 75% of the rest), faces it marks unknown left out. ``soft``: every emotion
    vote, single votes included, on faces whose votes are mostly emotions.
    """
    n_emotions = len(FERPLUS_CLASSES)
    if mode not in TARGETS:
        raise ValueError(f"targets must be one of {', '.join(TARGETS)}, not {mode!r}")
    if mode == "majority":
        labels = majority(votes)
        return one_hot(labels, n_emotions), labels >= 0
    if mode == "soft":
        emo = votes[:, :n_emotions].astype(np.float32)
        keep = emo.sum(1) * 2 > votes.sum(1)
        return emo / np.maximum(emo.sum(1, keepdims=True), 1), keep
    dist = np.stack([_ferplus_distribution(v) for v in votes])[:, :n_emotions]
    keep = dist.sum(1) > 0
    return (dist / np.maximum(dist.sum(1, keepdims=True), 1e-9)).astype(np.float32), keep


def _ferplus_distribution(raw: np.ndarray) -> np.ndarray:
    """FERPlus's ``_process_data`` for probability/crossentropy: zeros where it says "unknown"."""
    e = np.where(raw > 1, raw, 0).astype(np.float64)
    total = e.sum()
    out = np.zeros_like(e)
    part, count, valid = 0.0, 0, True
    while part < 0.75 * total and count < 3 and valid:
        top = e.max()
        for i in range(len(e)):
            if e[i] == top:
                out[i], e[i] = top, 0
                part += top
                count += 1
                if i >= len(FERPLUS_CLASSES):  # unknown or not a face among the top answers
                    valid = False
                    if out.sum() > top:  # other answers came first: drop this one
                        out[i] = 0
                        count -= 1
                    break
    if out.sum() <= 0.5 * total or count > 3 or out.argmax() >= len(FERPLUS_CLASSES):
        return np.zeros_like(out)
    return out


def training_targets(
    faces: FaceSet, mode: str, single: np.ndarray | None = None, mix: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Each face's target distribution (N, classes) and which faces to train on, for ``mode`` as
    :func:`resolve` reads it. With FER+ votes, ``single`` (FER2013's label of each face, -1 for none)
    takes the share ``mix`` of each target: the votes say how the crowd reads a face, the single
    label which expression it was meant to show. Faces with one label each are one-hot.
    """
    if faces.votes is None and single is not None:
        raise DataError("--single-labels joins FER+ votes; these faces carry one label each already")
    mode = resolve(mode, faces)
    if faces.votes is None:
        return one_hot(faces.labels, len(faces.classes)), faces.labels >= 0
    targets, keep = vote_targets(faces.votes, mode)
    if single is None:
        return targets, keep
    mixed = (1 - mix) * targets + mix * one_hot(single, len(faces.classes))
    return np.where((single >= 0)[:, None], mixed, targets).astype(np.float32), keep


def epoch_targets(targets: Tensor, mode: str, gen: torch.Generator) -> Tensor:
    """One epoch's targets: ``probability`` draws one answer per face from its distribution each epoch
    (FERPlus's label drawing); every other mode trains on the targets as they are."""
    if mode != "probability":
        return targets
    return F.one_hot(torch.multinomial(targets, 1, generator=gen)[:, 0], targets.shape[1]).float()
