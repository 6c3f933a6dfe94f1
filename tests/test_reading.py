"""Reading modes (crowd, expressive), their fitted threshold, and the FER2013 labels paired with FER+ faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_faces

from emotorch.choices import CLASSES, FERPLUS_CLASSES
from emotorch.errors import DataError
from emotorch.runtime.reading import answer, fit_threshold, mean_recall
from emotorch.training.data import FaceSet, paired_labels
from emotorch.training.targets import training_targets
from emotorch.training.train import augment_batch

NEUTRAL = CLASSES.index("neutral")


def test_crowd_takes_the_top_vote_and_expressive_names_an_emotion_once_it_shows():
    probs = np.array(
        [
            [0.10, 0.0, 0.0, 0.0, 0.80, 0.10, 0.0],  # an angry share of 0.10
            [0.30, 0.0, 0.0, 0.0, 0.60, 0.10, 0.0],  # an angry share of 0.30
            [0.05, 0.0, 0.0, 0.9, 0.05, 0.0, 0.0],
        ]
    )
    assert answer(probs, CLASSES).tolist() == [NEUTRAL, NEUTRAL, 3]
    assert answer(probs, CLASSES, "expressive", 0.25).tolist() == [NEUTRAL, 0, 3]
    assert answer(probs, CLASSES, "expressive", 0.05).tolist() == [0, 0, 3]
    with pytest.raises(ValueError, match="no expressive threshold"):
        answer(probs, CLASSES, "expressive", None)
    with pytest.raises(ValueError, match="reading must be one of"):
        answer(probs, CLASSES, "loud")


def test_the_threshold_is_fitted_to_mean_recall():
    # neutral faces whose top non-neutral share stays under 0.2, sad faces that the crowd reads neutral
    # but whose sad share is 0.3: only a threshold in (0.2, 0.3] tells both apart
    neutral = np.tile([0.0, 0.0, 0.0, 0.0, 0.8, 0.2, 0.0], (50, 1))
    sad = np.tile([0.0, 0.0, 0.0, 0.0, 0.7, 0.3, 0.0], (5, 1))
    probs, labels = np.vstack([neutral, sad]), np.array([NEUTRAL] * 50 + [5] * 5)
    t = fit_threshold(probs, labels, CLASSES)
    assert 0.2 < t <= 0.3
    assert mean_recall(labels, answer(probs, CLASSES, "expressive", t)) == 1.0
    assert mean_recall(labels, answer(probs, CLASSES)) == 0.5  # the crowd reading misses every sad face


def test_fer2013_labels_pair_with_ferplus_faces_by_their_pixels():
    images, labels = synthetic_faces(40)
    order = np.random.default_rng(0).permutation(40)  # other names, another order, lossy copies
    noisy = np.clip(images[order].astype(int) + np.random.default_rng(1).integers(-2, 3, (40, 48, 48)), 0, 255)
    reference = FaceSet(noisy.astype(np.uint8), labels[order], [f"r{i}" for i in range(40)])
    votes = FaceSet(images, np.full(40, -1), [f"fer{i:07d}.png" for i in range(40)], classes=FERPLUS_CLASSES)
    assert paired_labels(votes, reference).tolist() == labels.tolist()  # same class names, same order
    stranger = FaceSet(255 - images[:1], np.array([-1]), ["stranger.png"], classes=FERPLUS_CLASSES)
    with pytest.raises(DataError, match=r"stranger\.png: no face of the reference data matches it"):
        paired_labels(stranger, reference)


def test_single_labels_take_their_share_of_each_vote_target():
    votes = np.zeros((2, 10), np.int64)
    votes[0, FERPLUS_CLASSES.index("neutral")] = 10
    votes[1, FERPLUS_CLASSES.index("happy")] = 10
    faces = FaceSet(
        np.zeros((2, 48, 48), np.uint8), np.zeros(2, np.int64), ["a", "b"], classes=FERPLUS_CLASSES, votes=votes
    )
    single = np.array([CLASSES.index("angry"), -1])  # the second face has no FER2013 twin
    targets, keep = training_targets(faces, "crossentropy", single, 0.25)
    assert keep.all()
    assert targets[0, FERPLUS_CLASSES.index("neutral")] == pytest.approx(0.75)
    assert targets[0, FERPLUS_CLASSES.index("angry")] == pytest.approx(0.25)
    assert targets[1, FERPLUS_CLASSES.index("happy")] == pytest.approx(1.0)
    labelled = FaceSet(faces.images, np.array([0, 1]), ["a", "b"])
    with pytest.raises(DataError, match="one label each already"):
        training_targets(labelled, "auto", single, 0.25)


def test_photo_augmentation_is_seeded_and_stays_in_range():
    x = torch.randn(16, 1, 48, 48).clamp(-2, 2)
    a = augment_batch(x, "photo", torch.Generator().manual_seed(3))
    b = augment_batch(x, "photo", torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, augment_batch(x, "standard", torch.Generator().manual_seed(3)))
