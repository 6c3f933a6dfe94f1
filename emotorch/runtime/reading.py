"""From probabilities to one answer: the crowd's reading or the expressive one (no PyTorch).

A FER+ model's probabilities estimate how ten people would vote, and people call a face "neutral"
unless its expression is plain; so the most likely vote (``crowd``, the argmax) is often neutral on
faces that do show an emotion. ``expressive`` names the expression a face shows, what a person
frowning at a camera wants to be told: for a model with an expressive head, the largest of that
head's scores (:mod:`emotorch.training.models.expressive`, fitted on FER2013's labels); for any
other, the most likely non-neutral emotion whenever its share reaches the model's
``expressive_threshold``, fitted on val by :func:`fit_threshold`. The probabilities themselves are
the same in both; ``benchmarks/real_photos.py`` measures both readings on FER+ val and on real photos.
Every command that reads faces uses :func:`chosen`: expressive unless asked otherwise, where the model can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from emotorch.choices import READINGS

if TYPE_CHECKING:
    from emotorch.runtime.card import ModelCard

NEUTRAL = "neutral"


def chosen(requested: str | None, card: ModelCard) -> str:
    """``requested`` as given, else the default: expressive where the model can read it (an expressive head or
    threshold: every shipped model), since a photo, a video or a camera shows a person who wants to be told
    the expression they show; crowd for a model that cannot (a training run)."""
    if requested:
        return requested
    return "expressive" if card.reads_expressive else "crowd"


def check(reading: str, threshold: float | None, head: bool = False) -> None:
    """ValueError unless ``reading`` is known and, for ``expressive``, the model has a threshold or a ``head``."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, not {reading!r}")
    if reading == "expressive" and threshold is None and not head:
        raise ValueError(
            "this model has no expressive threshold and no expressive head (a training run, or a model packaged "
            "before they existed): read it with crowd (--reading crowd)"
        )


def answer(
    probs: np.ndarray,
    classes: Sequence[str],
    reading: str = "crowd",
    threshold: float | None = None,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """The answer (class index) for each row of ``probs`` (N, K) under ``reading``; ``scores`` (N, K): the
    expressive head's output, for a model that has one."""
    top = probs.argmax(1)
    if reading == "crowd" or (reading in READINGS and NEUTRAL not in classes):
        return top
    check(reading, threshold, scores is not None)
    if scores is not None:
        return scores.argmax(1)
    neutral = list(classes).index(NEUTRAL)
    others = probs.copy()
    others[:, neutral] = -1.0
    best = others.argmax(1)
    return np.where(others[np.arange(len(probs)), best] >= threshold, best, top)


def mean_recall(labels: np.ndarray, preds: np.ndarray) -> float:
    """The mean over the classes present in ``labels`` of each class's recall (balanced accuracy)."""
    return float(np.mean([(preds[labels == k] == k).mean() for k in np.unique(labels)]))


def fit_threshold(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> float:
    """The expressive threshold that maximises mean recall over ``labels``: val's FER2013 labels, which
    name the expression a face was meant to show (FER+'s majority names how the crowd read it), with
    every class counting the same, so neutral's many faces do not outvote the rarer emotions."""
    grid = np.round(np.arange(0.05, 0.51, 0.01), 2)
    scores = [mean_recall(labels, answer(probs, classes, "expressive", float(t))) for t in grid]
    return float(grid[int(np.argmax(scores))])


def fit_offsets(scores: np.ndarray, labels: np.ndarray, fixed: int, passes: int = 3) -> np.ndarray:
    """Per-class offsets added to ``scores`` (N, K; log-probabilities) that maximise mean recall over
    ``labels``, by coordinate ascent over a grid of -2..3 in steps of 0.1; class ``fixed`` (neutral) keeps 0,
    classes without labels keep 0."""
    grid = np.round(np.arange(-2, 3.01, 0.1), 2)
    offsets = np.zeros(scores.shape[1])
    present = set(np.unique(labels).tolist())
    for _ in range(passes):
        for k in range(scores.shape[1]):
            if k == fixed or k not in present:
                continue
            trial = offsets.copy()

            def score(v: float, k: int = k, trial: np.ndarray = trial) -> float:
                trial[k] = v
                return mean_recall(labels, (scores + trial).argmax(1))

            offsets[k] = max(grid, key=score)
    return offsets
