from __future__ import annotations

import cv2
import numpy as np
import pytest

from emotorch.runtime.detect import FER_TEMPLATE, Face, YuNetDetector, align, alignment_matrix

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
pytest.importorskip("yuface", reason="the YuNet detector package is not installed")


@pytest.fixture(scope="module")
def detector():
    return YuNetDetector()


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()  # 512x512 RGB photo with one smiling face


def test_one_face_in_the_astronaut_photo(detector, astronaut):
    faces = detector(astronaut)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 250 and faces[0].score > 0.6


def test_aligned_crop_puts_landmarks_on_the_fer_template(detector, astronaut):
    face = detector(astronaut)[0]
    crop = align(astronaut, face)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    m = alignment_matrix(face)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped[:2] - FER_TEMPLATE[:2]).max() < 2.0  # eyes land where FER2013 has them
    assert abs(mapped[0, 1] - mapped[1, 1]) < 1.0  # and level


def test_rotated_face_aligns_like_the_upright_one(detector, astronaut):
    face = detector(astronaut)[0]
    upright = align(astronaut, face).astype(float)
    h, w = astronaut.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    tilted_photo = cv2.warpAffine(astronaut, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    assert len(detector(tilted_photo)) == 1  # still found
    # with the landmarks where the tilt puts them, the crop comes out level again
    tilted_face = Face(face.box, face.landmarks @ m[:, :2].T.astype(np.float32) + m[:, 2], face.score)
    tilted = align(tilted_photo, tilted_face).astype(float)
    assert np.corrcoef(upright.ravel(), tilted.ravel())[0, 1] > 0.95


def test_several_faces_and_downscaled_detection(astronaut):
    face = cv2.resize(astronaut[40:300, 120:360], (240, 260))
    tile = np.concatenate([np.concatenate([face, face[:, ::-1]], 1)] * 2, 0)  # 4 faces, 480x520
    big = cv2.resize(tile, None, fx=2.5, fy=2.5)  # 1300x1200: detected on a 640-px copy
    faces = YuNetDetector(max_side=640)(big)
    assert len(faces) == 4
    for f in faces:  # boxes are in the big image's pixels
        assert f.box[2] > 150 and 0 <= f.box[0] < big.shape[1]


def test_no_face_gives_an_empty_list(detector):
    assert detector(skdata.coffee()) == []
    assert detector(np.zeros((240, 320, 3), np.uint8)) == []


def test_min_face_drops_small_faces(astronaut):
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    assert len(YuNetDetector(min_face=10)(small)) == 1
    assert YuNetDetector(min_face=60)(small) == []
