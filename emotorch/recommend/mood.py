"""A viewer's mood: an emotion probability vector and where it sits in Russell's valence/arousal plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emotorch.choices import CLASSES, FERPLUS_CLASSES

# Where each emotion sits in the valence/arousal plane (after Russell 1980 and the circumplex
# placements used in affective computing): valence, arousal in [-1, 1].
EMOTION_VA: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.7), "disgust": (-0.65, 0.35), "fear": (-0.65, 0.65), "happy": (0.8, 0.45),
    "neutral": (0.0, 0.0), "sad": (-0.7, -0.45), "surprise": (0.35, 0.75), "contempt": (-0.55, 0.25),
}  # fmt: skip # a table: four emotions to a line
# Where ``uplift`` aims for each emotion: comfort for sad, calm for angry and afraid.
UPLIFT_VA: dict[str, tuple[float, float]] = {
    "angry": (0.35, -0.45), "disgust": (0.45, 0.0), "fear": (0.4, -0.35), "happy": (0.8, 0.45),
    "neutral": (0.55, 0.2), "sad": (0.5, -0.1), "surprise": (0.55, 0.5), "contempt": (0.5, 0.15),
}  # fmt: skip # a table, as above
SUM_TOLERANCE = 0.05  # probabilities summing this close to 1 are renormalised; others are refused


@dataclass(frozen=True)
class Mood:
    """An emotion probability vector over FER+'s eight classes (:data:`FERPLUS_CLASSES`; a FER2013
    model's seven leave contempt at 0) and where it sits in the valence/arousal plane."""

    probs: tuple[float, ...]

    @property
    def emotion(self) -> str:
        return FERPLUS_CLASSES[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(max(self.probs))

    def point(self, table: Mapping[str, tuple[float, float]]) -> np.ndarray:
        """The probability-weighted mean of the emotions' places in ``table``."""
        return np.asarray(self.probs) @ np.asarray([table[c] for c in FERPLUS_CLASSES])

    @property
    def negative(self) -> bool:
        """Whether the mood sits left of the valence axis (sad, angry, afraid, disgusted)."""
        return bool(self.point(EMOTION_VA)[0] < 0)

    def context(self) -> np.ndarray:
        """The bandit's context vector: the 8 probabilities and a bias term."""
        return np.append(np.asarray(self.probs), 1.0)


def mood(emotion: str | None = None, probs: Mapping[str, float] | Sequence[float] | None = None) -> Mood:
    """A :class:`Mood` from a label (certain) or a probability vector (by name, or in the class order of
    FER2013's seven or FER+'s eight classes)."""
    if (emotion is None) == (probs is None):
        raise ValueError("give exactly one of an emotion label or a probability vector")
    names = ", ".join(FERPLUS_CLASSES)
    if emotion is not None:
        if emotion not in FERPLUS_CLASSES:
            raise ValueError(f"unknown emotion {emotion!r}; expected one of {names}")
        return Mood(tuple(float(c == emotion) for c in FERPLUS_CLASSES))
    if isinstance(probs, Mapping):
        unknown = set(probs) - set(FERPLUS_CLASSES)
        if unknown:
            raise ValueError(f"unknown emotion(s) {', '.join(sorted(unknown))}; expected {names}")
        values = [float(probs.get(c, 0.0)) for c in FERPLUS_CLASSES]
    else:
        values = [float(p) for p in probs]
        if len(values) not in (len(CLASSES), len(FERPLUS_CLASSES)):
            raise ValueError(
                f"a probability vector has {len(CLASSES)} values ({', '.join(CLASSES)}) "
                f"or {len(FERPLUS_CLASSES)} ({names})"
            )
        values += [0.0] * (len(FERPLUS_CLASSES) - len(values))
    if not all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise ValueError("each probability must be a number within [0, 1]")
    total = sum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"probabilities sum to {total:.4g}; they must sum to 1 (within {SUM_TOLERANCE})")
    return Mood(tuple(v / total for v in values))


def unknown_mood() -> Mood:
    """Feedback without a mood: every emotion equally likely."""
    return mood(probs=[1 / len(FERPLUS_CLASSES)] * len(FERPLUS_CLASSES))
