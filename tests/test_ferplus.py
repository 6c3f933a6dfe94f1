"""FER+ crowd votes: the FERPlus layout, fer2013.csv paired row by row with fer2013new.csv, vote
targets, training on them and evaluation against the majority and the vote distribution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixels_text, write_image_folders
from PIL import Image

from emotorch.choices import CLASSES, FERPLUS_CLASSES
from emotorch.errors import DataError
from emotorch.runtime.registry import load_model
from emotorch.training.config import TrainConfig
from emotorch.training.data import FERPLUS_COLUMNS, VOTE_NAMES, load_dataset, majority
from emotorch.training.evaluate import evaluate, scorable
from emotorch.training.targets import vote_targets
from emotorch.training.train import train

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
USAGES = {"train": "Training", "val": "PublicTest"}


def votes_for(cls: str, n: int = 10, second: str | None = None) -> list[int]:
    """FER+ vote columns (their own order) with ``n - 2`` votes for ``cls`` and 2 for ``second``."""
    votes = [0] * len(FERPLUS_COLUMNS)
    votes[FERPLUS_COLUMNS.index(cls)] += n - 2
    votes[FERPLUS_COLUMNS.index(second or cls)] += 2
    return votes


def write_ferplus(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """ROOT/FER2013Train|FER2013Valid/ with PNGs and a headerless label.csv, majorities cycling over FER+'s 8."""
    folders = {"train": "FER2013Train", "val": "FER2013Valid"}
    for s, (split, n) in enumerate(splits.items()):
        d = root / folders[split]
        d.mkdir(parents=True)
        images = np.random.default_rng(seed + s).integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
        lines = []
        for i in range(n):
            cls = FERPLUS_CLASSES[i % len(FERPLUS_CLASSES)]
            images[i, (i % 8) * 6 : (i % 8) * 6 + 6] += 120  # a band per class, as in synthetic_faces
            Image.fromarray(images[i]).save(d / f"fer{i:07d}.png")
            lines.append(f'fer{i:07d}.png,"(0, 0, 48, 48)",' + ",".join(map(str, votes_for(cls, second="neutral"))))
        (d / "label.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def ferplus(tmp_path: Path) -> Path:
    return write_ferplus(tmp_path / "ferplus", {"train": 128, "val": 32})


def test_ferplus_layout_loads_votes_in_class_order(ferplus):
    ds = load_dataset(ferplus, progress=False)
    assert ds.format == "ferplus" and list(ds.splits) == ["train", "val"] and ds.classes == FERPLUS_CLASSES
    val = ds.split("val")
    assert val.votes.shape == (32, len(VOTE_NAMES)) and val.labeled
    # face i's majority is class i % 8, its votes 8 for it and 2 for neutral (columns reordered to VOTE_NAMES)
    assert list(val.labels) == [i % 8 for i in range(32)]
    assert val.votes[7, VOTE_NAMES.index("contempt")] == 8 and val.votes[7, VOTE_NAMES.index("neutral")] == 2
    assert val.class_counts()["contempt"] == 4
    again = load_dataset(ferplus, progress=False)  # from the cache
    assert np.array_equal(again.split("val").votes, val.votes) and again.classes == FERPLUS_CLASSES


def test_majority_and_targets_follow_ferplus():
    # the README's example: neutral 4, anger 1, contempt 4, unknown 1 (FER+ column order)
    raw = np.array([[4, 0, 0, 0, 1, 0, 0, 4, 1, 0]])
    votes = raw[:, [FERPLUS_COLUMNS.index(n) for n in VOTE_NAMES]]
    assert majority(votes)[0] == -1  # 4 of 8 counted votes is not more than half
    ce, keep = vote_targets(votes, "crossentropy")
    assert keep[0] and ce[0, FERPLUS_CLASSES.index("neutral")] == ce[0, FERPLUS_CLASSES.index("contempt")] == 0.5
    soft, _ = vote_targets(votes, "soft")  # single votes kept: anger 1 of 9
    assert soft[0, FERPLUS_CLASSES.index("angry")] == pytest.approx(1 / 9)
    _, keep = vote_targets(votes, "majority")
    assert not keep[0]
    unknown = np.zeros((1, 10), np.int64)
    unknown[0, VOTE_NAMES.index("unknown")] = 6
    unknown[0, VOTE_NAMES.index("sad")] = 4
    assert majority(unknown)[0] == -1 and not vote_targets(unknown, "crossentropy")[1][0]
    assert majority(unknown, emotions_only=False)[0] == VOTE_NAMES.index("unknown")


def _write_pair(root: Path, n: int = 24) -> tuple[Path, Path, list[list[int]]]:
    """fer2013.csv whose face i has every pixel = i, and fer2013new.csv whose image names drift, repeat
    and go missing as in the real file: pairing by name instead of by row gives other votes."""
    root.mkdir(parents=True, exist_ok=True)
    rows, vote_rows, votes = ["emotion,pixels,Usage"], [HEADER], []
    for i in range(n):
        usage = "Training" if i < n - 8 else "PublicTest"
        rows.append(f"{i % 7},{pixels_text(np.full((48, 48), i, np.uint8))},{usage}")
        v = votes_for(FERPLUS_CLASSES[i % 8], second=FERPLUS_COLUMNS[(i + 3) % 8])
        name = "" if i == 5 else f"fer{(i + 3 if i > 9 else i if i != 7 else 6):07d}.png"  # drift, a repeat, a gap
        vote_rows.append(f"{usage},{name}," + ",".join(map(str, v)))
        votes.append(v)
    (root / "fer2013.csv").write_text("\n".join(rows) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(vote_rows) + "\n")
    return root / "fer2013.csv", root / "fer2013new.csv", votes


def test_csv_pairs_with_fer2013new_row_by_row_not_by_name(tmp_path):
    csv_file, labels, votes = _write_pair(tmp_path / "d")
    ds = load_dataset(csv_file, labels=labels, progress=False)
    assert ds.format == "csv+votes" and ds.classes == FERPLUS_CLASSES
    faces = np.concatenate([ds.split("train").images, ds.split("val").images])
    got = np.concatenate([ds.split("train").votes, ds.split("val").votes])
    for face, v in zip(faces, got, strict=True):
        row = int(face[0, 0])  # the face's own row
        assert list(v) == [votes[row][FERPLUS_COLUMNS.index(n)] for n in VOTE_NAMES], f"row {row}: another row's votes"
    assert list(ds.split("val").labels) == [i % 8 for i in range(16, 24)]


def test_csv_pair_refuses_files_that_do_not_pair(tmp_path):
    csv_file, labels, _ = _write_pair(tmp_path / "d")
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:-1]) + "\n")  # one row short
    with pytest.raises(DataError, match=r"fer2013new.csv has 23 rows and .*fer2013.csv has 24"):
        load_dataset(csv_file, labels=labels, progress=False)
    lines[3] = lines[3].replace("Training", "PublicTest", 1)
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fer2013new.csv, line 4: Usage 'PublicTest', but row 3 .* 'Training'"):
        load_dataset(csv_file, labels=labels, progress=False)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('fer0000003.png,"(0, 0, 48, 48)",1,2,3', r"has 5 fields, expected 12"),
        ('fer0000003.png,"(0, 0, 48, 48)",8,0,0,0,0,0,0,-2,0,0', r"contempt vote count is '-2'"),
        ('fer0000003.png,"(0, 0, 48, 48)",8,0,0,0,0,0,0,1.5,0,0', r"contempt vote count is '1.5'"),
        ('fer9999999.png,"(0, 0, 48, 48)",8,0,0,0,0,0,0,2,0,0', r"names fer9999999.png, which is not in"),
    ],
)
def test_bad_label_rows_name_file_and_line(ferplus, line, problem):
    label_csv = ferplus / "FER2013Valid" / "label.csv"
    lines = label_csv.read_text().splitlines()
    lines[3] = line
    label_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"FER2013Valid/label.csv, line 4: .*{problem}"):
        load_dataset(ferplus, progress=False)
    ds = load_dataset(ferplus, skip_bad=True, progress=False)  # nothing half-loaded: the row alone is skipped
    assert len(ds.split("val")) == 31 and len(ds.split("val").skipped) == 1
    assert len(ds.split("val").votes) == 31


def test_contempt_folder_is_its_own_class(tmp_path):
    data = write_image_folders(tmp_path / "f", {"train": 14})
    (data / "train" / "Contempt").mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 48), 90 + i, np.uint8)).save(data / "train" / "Contempt" / f"{i}.png")
    ds = load_dataset(data, progress=False)
    assert ds.classes == FERPLUS_CLASSES and ds.split("train").class_counts()["contempt"] == 2
    plain = load_dataset(write_image_folders(tmp_path / "g", {"train": 14}), progress=False)
    assert plain.classes == CLASSES


@pytest.mark.parametrize("targets", ["majority", "probability", "crossentropy", "soft"])
def test_training_on_votes_learns_eight_classes(ferplus, tmp_path, targets):
    cfg = TrainConfig(
        data=str(ferplus), model="emonet", model_options={"width": 4}, batch_size=32, epochs=1, targets=targets
    )
    result = train(cfg, tmp_path / "run", progress=False)
    meta = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["meta"]
    assert meta["classes"] == list(FERPLUS_CLASSES) and meta["config"]["targets"] == targets
    assert result["n"] == 32  # every val face has a majority here


def test_vote_targets_need_votes(tiny_folders, tmp_path):
    cfg = TrainConfig(
        data=str(tiny_folders), model="emonet", model_options={"width": 2}, epochs=1, targets="crossentropy"
    )
    with pytest.raises(DataError, match="--targets crossentropy needs FER\\+ votes"):
        train(cfg, tmp_path / "run", progress=False)


def test_a_fer2013_model_starts_a_ferplus_one(tiny_run, ferplus, tmp_path):
    cfg = TrainConfig(
        data=str(ferplus),
        model="emonet",
        model_options={"width": 4},
        batch_size=32,
        epochs=1,
        init=str(tiny_run),
        lr=1e-6,
        warmup_epochs=0,
    )
    train(cfg, tmp_path / "run", progress=False)
    old = torch.load(tiny_run / "best.pt", weights_only=True)["model"]["head.3.weight"]
    new = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]["head.3.weight"]
    assert new.shape == (8, old.shape[1])
    assert torch.allclose(new[:7], old, atol=1e-3)  # the seven shared rows, copied by name


def test_evaluate_scores_against_the_majority_and_the_votes(tiny_run, ferplus):
    faces = load_dataset(ferplus, progress=False).split("val")
    model = load_model(tiny_run)  # a 7-class model: contempt faces are left out and counted
    metrics, probs, scored = evaluate(model, faces)
    assert metrics["left_out"] == {"contempt": 4} and metrics["n"] == len(scored) == 28 and probs.shape == (28, 7)
    assert metrics["vote_kl"] > 0 and 0 <= metrics["ece"] <= 1
    faces.votes[0] = 0  # no majority: left out too
    faces.votes[0, VOTE_NAMES.index("happy")] = faces.votes[0, VOTE_NAMES.index("sad")] = 5
    faces.labels = majority(faces.votes)
    _, left_out = scorable(faces, CLASSES)
    assert left_out == {"no_majority": 1, "contempt": 4}


def test_evaluate_scores_probabilities_already_computed_for_every_face(tiny_run, ferplus):
    """`evaluate --predictions` runs the model once: metrics from the probabilities of all faces, left-outs dropped."""
    faces = load_dataset(ferplus, progress=False).split("val")
    model = load_model(tiny_run)  # 7 classes: the 4 contempt faces are left out
    metrics, probs, scored = evaluate(model, faces)
    given, given_probs, given_scored = evaluate(model, faces, probs=model.predict_proba(faces.images))
    np.testing.assert_allclose(given_probs, probs, atol=1e-6)
    assert given_scored.sources == scored.sources and len(scored) == 28
    assert given["accuracy"] == metrics["accuracy"] and given["left_out"] == metrics["left_out"] == {"contempt": 4}


def test_cli_reads_the_csv_pair_and_reports_votes(tmp_path, tiny_run):
    csv_file, labels, _ = _write_pair(tmp_path / "d")
    run = [sys.executable, "-m", "emotorch", "-q"]
    stats = json.loads(
        subprocess.run(
            [*run, "data", "stats", str(csv_file), "--labels", str(labels), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert stats["format"] == "csv+votes" and stats["splits"]["val"]["classes"]["contempt"] == 1
    assert stats["splits"]["val"]["classes"]["no_majority"] == 0
    out = subprocess.run(
        [*run, "evaluate", "--model", str(tiny_run), "--data", str(csv_file), "--labels", str(labels)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "against the FER+ majority label" in out and "KL to the votes" in out and "contempt" in out


def test_package_teaches_the_expressive_head_contempt_from_the_votes(ferplus, tiny_run, tmp_path, weights_dir):
    """FER2013's labels lack contempt: `package --expressive-head` takes it from --data's FER+ majorities."""
    from emotorch.cli import main

    cfg = TrainConfig(data=str(ferplus), model="emonet", model_options={"width": 4}, batch_size=32, epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    args = ["-q", "package", str(tmp_path / "run"), "--name", "plus", "--data", str(ferplus), "--recipe", "r"]
    head = ["--no-precise-bn", "--expressive-head", str(tiny_run.parent / "faces"), "--expressive-crowd-weight", "0.5"]
    assert main([*args, *head]) == 0
    card = load_model("plus").card
    assert card.expressive_head and card.classes == FERPLUS_CLASSES
    fit = card.provenance["expressive_head_fit"]
    assert fit["crowd_faces"] == {"contempt": 16} and fit["crowd_weight"] == 0.5 and fit["train_faces"] == 112
