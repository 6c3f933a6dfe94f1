from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_FER, needs_fer, pixels_text, synthetic_faces, write_image_folders
from PIL import Image

from emotorch.choices import CLASSES
from emotorch.errors import DataError
from emotorch.training import data
from emotorch.training.data import load_dataset


def write_fer_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return path


def test_csv_codes_are_not_alphabetical(tmp_path):
    """FER2013 code 4 is sad and 6 is neutral (the folders' alphabetical order would say otherwise)."""
    imgs, _ = synthetic_faces(7)
    rows = [(str(code), pixels_text(imgs[code]), "Training") for code in range(7)]
    ds = load_dataset(write_fer_csv(tmp_path / "fer2013.csv", rows))
    labels = [CLASSES[i] for i in ds.split("train").labels]
    assert labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert labels[4] == "sad" and labels[6] == "neutral"
    np.testing.assert_array_equal(ds.split("train").images[3], imgs[3])


def test_csv_usage_maps_to_splits(tmp_path):
    imgs, _ = synthetic_faces(3)
    rows = [
        ("0", pixels_text(imgs[0]), "Training"),
        ("3", pixels_text(imgs[1]), "PublicTest"),
        ("5", pixels_text(imgs[2]), "PrivateTest"),
    ]
    ds = load_dataset(write_fer_csv(tmp_path / "fer2013.csv", rows))
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 1, "val": 1, "test": 1}
    assert CLASSES[ds.split("test").labels[0]] == "surprise"


def test_kaggle_pair_has_unlabeled_test(tmp_path):
    imgs, _ = synthetic_faces(4)
    (tmp_path / "train.csv").write_text("emotion,pixels\n" + "".join(f"6,{pixels_text(i)}\n" for i in imgs[:3]))
    (tmp_path / "test.csv").write_text("pixels\n" + f"{pixels_text(imgs[3])}\n")
    ds = load_dataset(tmp_path)
    assert ds.split("train").labeled and CLASSES[ds.split("train").labels[0]] == "neutral"
    assert not ds.split("test").labeled and len(ds.split("test")) == 1


@pytest.mark.parametrize(
    ("pixels", "code", "usage", "problem"),
    [
        ("1 2 3", "0", "Training", "pixels has 3 values, expected 2304"),
        (" ".join(["7"] * 2303 + ["x"]), "0", "Training", "pixel 2303 is 'x', not an integer"),
        (" ".join(["7"] * 2303 + ["256"]), "0", "Training", "pixel 2303 is 256, outside 0-255"),
        (" ".join(["7"] * 2304), "9", "Training", "unknown emotion code '9'"),
        (" ".join(["7"] * 2303 + ["²"]), "0", "Training", "pixel 2303 is '²', not an integer"),  # str.isdigit says yes
        (" ".join(["7"] * 2303 + ["--5"]), "0", "Training", "pixel 2303 is '--5', not an integer"),
        (" ".join(["7"] * 2303 + ["٣"]), "0", "Training", "pixel 2303 is '٣', not an integer"),  # int() reads 3
        ("\u00a0".join(["7"] * 2304), "0", "Training", "pixels are separated by '\\xa0', not spaces"),
        (" ".join(["7"] * 2304), "²", "Training", "unknown emotion code '²'"),
        (" ".join(["7"] * 2304), "٣", "Training", "unknown emotion code '٣'"),
        (" ".join(["7"] * 2304), "0", "Validation", "unknown Usage 'Validation'"),
    ],
)
def test_bad_csv_row_names_file_line_and_problem(tmp_path, pixels, code, usage, problem):
    good = pixels_text(synthetic_faces(1)[0][0])
    path = write_fer_csv(tmp_path / "fer2013.csv", [("0", good, "Training"), (code, pixels, usage)])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert f"{path}, line 3" in str(err.value) and problem in str(err.value)
    ds = load_dataset(path, skip_bad=True)  # skipped and counted, not dropped silently
    assert len(ds.split("train")) == 1
    assert sum(len(fs.skipped) for fs in ds.splits.values()) == 1


def test_csv_without_pixels_column(tmp_path):
    (tmp_path / "x.csv").write_text("emotion,image\n0,1 2\n")
    with pytest.raises(DataError, match="no 'pixels' column"):
        load_dataset(tmp_path / "x.csv")


def test_folders_any_size_and_mode_become_48x48_gray(tmp_path):
    root = tmp_path / "flat"
    (root / "happiness").mkdir(parents=True)
    (root / "fearful").mkdir()
    Image.new("RGB", (120, 90), (200, 10, 10)).save(root / "happiness" / "a.jpg")
    Image.new("RGBA", (30, 30), (0, 0, 255, 128)).save(root / "fearful" / "b.png")
    ds = load_dataset(root)
    fs = ds.split("all")
    assert fs.images.shape == (2, 48, 48) and fs.images.dtype == np.uint8
    assert sorted(CLASSES[i] for i in fs.labels) == ["fear", "happy"]
    assert fs.source_sizes == {"120x90": 1, "30x30": 1}


def test_split_folders(tiny_folders):
    ds = load_dataset(tiny_folders)
    assert list(ds.splits) == ["train", "val"]
    assert len(ds.split("train")) == 112 and ds.split("train").class_counts()["angry"] == 16


def test_unknown_class_folder_is_named(tmp_path):
    root = write_image_folders(tmp_path / "f", {"train": 14})
    (root / "train" / "bored").mkdir()
    Image.new("L", (48, 48)).save(root / "train" / "bored" / "x.png")
    with pytest.raises(DataError, match="bored"):
        load_dataset(root)
    assert len(load_dataset(root, skip_unknown=True).split("train")) == 14


def test_truncated_and_non_image_files(tmp_path):
    root = write_image_folders(tmp_path / "f", {"train": 14})
    good = root / "train" / "sad" / "train_5.png"
    bad = root / "train" / "sad" / "broken.png"
    bad.write_bytes(good.read_bytes()[:60])
    (root / "train" / "sad" / "notes.txt").write_text("not a face")
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert "broken.png" in str(err.value) or "notes.txt" in str(err.value)
    assert "1 more bad" in str(err.value)
    ds = load_dataset(root, skip_bad=True)
    assert len(ds.split("train")) == 14 and len(ds.split("train").skipped) == 2


def test_cache_hit_and_invalidation(tiny_folders, monkeypatch):
    load_dataset(tiny_folders)
    calls = []
    real = data._decode_images
    monkeypatch.setattr(data, "_decode_images", lambda *a: calls.append(1) or real(*a))
    load_dataset(tiny_folders)
    assert calls == []  # served from the cache
    f = tiny_folders / "train" / "happy" / "train_3.png"
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(f)
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    ds = load_dataset(tiny_folders)
    assert calls  # a changed file invalidates the cache
    i = ds.split("train").sources.index(str(f))
    assert (ds.split("train").images[i] == 9).all()


def test_cache_lives_outside_the_data(tiny_folders, tmp_path):
    load_dataset(tiny_folders)
    assert not list(tiny_folders.rglob("*.npz"))
    assert list((data.cache_dir() / "datasets").glob("*.npz"))


@needs_fer
def test_shared_fer2013_counts():
    ds = load_dataset(SHARED_FER, progress=False)
    assert len(ds.split("train")) == 28709 and len(ds.split("val")) == 3589
    assert ds.split("train").class_counts()["disgust"] == 436
    assert ds.split("val").class_counts()["happy"] == 895


def test_unterminated_quote_is_reported_where_it_opens(tmp_path):
    good = pixels_text(synthetic_faces(1)[0][0])
    lines = ["emotion,pixels,Usage", *[f"0,{good},Training"] * 2, f'0,"{good},Training', *[f"0,{good},Training"] * 15]
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fer2013.csv, line 4: a quote opened on this line is not closed"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"emotion,pixels,Usage\n", "no rows after the header"),
        (b'emotion,pixels,Usage\n0,"1 2\n', "line 2: has 2 fields"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text CSV file"),
    ],
)
def test_hand_made_bad_csv_files(tmp_path, content, problem):
    path = tmp_path / "faces.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(path)
    assert "faces.csv" in str(err.value)
