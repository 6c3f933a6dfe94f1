"""From probabilities to one answer: the crowd's reading or the expressive one (no PyTorch).

A FER+ model's probabilities estimate how ten people would vote, and people call a face "neutral"
unless its expression is plain; so the most likely vote (``crowd``, the argmax) is often neutral on
faces that do show an emotion. ``expressive`` names the most likely non-neutral emotion whenever its
share reaches the model's ``expressive_threshold``, fitted on val by :func:`fit_threshold`: what a
person frowning at a camera wants to be told. The probabilities themselves are the same in both;
``benchmarks/real_photos.py`` measures both readings on FER+ val and on real photos.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotorch.choices import READINGS

NEUTRAL = "neutral"


def check(reading: str, threshold: float | None) -> None:
    """ValueError unless ``reading`` is known and, for ``expressive``, the model has its threshold."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, not {reading!r}")
    if reading == "expressive" and threshold is None:
        raise ValueError("this model has no expressive threshold (models packaged before it existed): use crowd")


def answer(
    probs: np.ndarray, classes: Sequence[str], reading: str = "crowd", threshold: float | None = None
) -> np.ndarray:
    """The answer (class index) for each row of ``probs`` (N, K) under ``reading``."""
    top = probs.argmax(1)
    if reading == "crowd" or (reading in READINGS and NEUTRAL not in classes):
        return top
    check(reading, threshold)
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
