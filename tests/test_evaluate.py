from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixels_text, run_cli, synthetic_faces, write_image_folders

import emotorch as emotorch_pkg
from emotorch.choices import CLASSES
from emotorch.runtime.classifier import tta_views
from emotorch.training.evaluate import compute_metrics

emotorch = run_cli  # the command as a user runs it


def test_metrics_by_hand():
    labels = np.array([0, 0, 3, 3, 3, 5])
    preds = np.array([0, 3, 3, 3, 5, 5])
    m = compute_metrics(labels, preds)
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["angry"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["happy"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["sad"]["recall"] == 1.0
    assert set(m["per_class"]) == {"angry", "happy", "sad"}  # macro-F1 over the classes present
    f1s = [2 / 3, 2 / 3, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["confusion_matrix"][0][3] == 1 and sum(map(sum, m["confusion_matrix"])) == 6


def test_tta_views_are_ten_48x48_crops():
    x = np.arange(2 * 48 * 48, dtype=np.float32).reshape(2, 1, 48, 48)
    views = tta_views(x)
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    np.testing.assert_array_equal(views[4], x)  # the centre crop of the padded copy is the input
    np.testing.assert_array_equal(views[9], x[..., ::-1])
    top_left = tta_views(x, pad=2)[0]  # the image moved 2 px right and down, reflected into the border
    np.testing.assert_array_equal(top_left[..., 2:, 2:], x[..., :-2, :-2])
    np.testing.assert_array_equal(top_left[..., 0, 2:], x[..., 2, :-2])


def test_evaluate_json_on_a_folder_with_some_classes(tiny_run, tmp_path):
    data = write_image_folders(tmp_path / "some", {"test": 9}, seed=7, names=("happy", "sad", "surprise") * 3)
    res = emotorch("evaluate", "--model", str(tiny_run), "--data", str(data), "--json", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "n"} <= set(m)
    assert m["n"] == 9 and set(m["per_class"]) == {"happy", "sad", "surprise"}
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"confusion_matrix.png", "predictions.png", "curves.png"}


def test_evaluate_tta_changes_nothing_in_shape(tiny_run, tmp_path):
    res = emotorch(
        "evaluate",
        "--model",
        str(tiny_run / "best.pt"),
        "--data",
        str(tiny_run.parent / "faces"),
        "--split",
        "val",
        "--tta",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tta"] is True


@pytest.mark.slow
def test_predictions_for_unlabeled_kaggle_test_csv(tiny_run, tmp_path):
    images, _ = synthetic_faces(5)
    (tmp_path / "test.csv").write_text("pixels\n" + "".join(pixels_text(i) + "\n" for i in images))
    dest = tmp_path / "pred.csv"
    args = ("evaluate", "--model", str(tiny_run), "--data", str(tmp_path / "test.csv"))
    res = emotorch(*args, "--predictions", str(dest))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(dest.open()))
    assert len(rows) == 5 and rows[0]["emotion"] in rows[0]
    assert sum(float(rows[0][c]) for c in CLASSES) == pytest.approx(1, abs=1e-3)
    again = emotorch(*args, "--predictions", str(dest))
    assert again.returncode == 2 and "--force" in again.stderr  # never overwritten without asking
    nolabels = emotorch(*args, "--json")
    assert nolabels.returncode == 1 and "no labels" in nolabels.stderr


def test_predict_proba_uses_the_checkpoint_preprocessing(tiny_run):
    from emotorch.runtime.images import normalize
    from emotorch.runtime.registry import load_model
    from emotorch.training.loading import module_of

    loaded = load_model(tiny_run)
    images, _ = synthetic_faces(3)
    probs = loaded.predict_proba(images)
    mean, std = loaded.card.mean, loaded.card.std
    x = (torch.from_numpy(images).float().unsqueeze(1) / 255 - mean) / std
    np.testing.assert_allclose(normalize(images, mean, std), x.numpy(), atol=1e-6)
    torch.testing.assert_close(normalize(torch.from_numpy(images), mean, std), x)
    with torch.no_grad():
        expected = torch.softmax(module_of(loaded)(x), 1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    res = emotorch("evaluate", "--model", str(bad), "--data", str(tmp_path))
    assert res.returncode == 1 and "model.pt" in res.stderr and "Traceback" not in res.stderr


def damaged_checkpoints(run, tmp_path) -> dict[str, str]:
    """Copies of a run's best.pt, each damaged in one way, and the words its error must contain."""
    good = run / "best.pt"
    ckpt = torch.load(good, weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (tmp_path / "noise.pt").write_bytes(bytes(data))

    def variant(name: str, model=None, meta=None, keep_digest: bool = True) -> None:
        changed = {**ckpt, "model": model or ckpt["model"], "meta": meta or ckpt["meta"]}
        if not keep_digest:
            changed.pop("weights_sha256")
        torch.save(changed, tmp_path / name)

    variant("nan.pt", {**ckpt["model"], first: torch.full_like(ckpt["model"][first], float("nan"))}, keep_digest=False)
    variant("tampered.pt", {**ckpt["model"], first: ckpt["model"][first] + 0.01})
    variant("shapes.pt", meta={**ckpt["meta"], "model_options": {"width": 8}})
    variant("no-meta.pt", meta={k: v for k, v in ckpt["meta"].items() if k != "classes"})
    return {
        "noise.pt": "noise.pt",
        "nan.pt": "NaN or infinite",
        "tampered.pt": "recorded sha256",
        "shapes.pt": "do not fit the model",
        "no-meta.pt": "metadata lacks classes",
    }


@pytest.mark.slow
def test_damaged_checkpoints_are_one_line_errors(tiny_run, tmp_path):
    from emotorch.runtime.registry import load_model
    from emotorch.training.checkpoint import CheckpointError

    sample = str((Path(emotorch_pkg.__file__).parent / "samples") / "astronaut.jpg")
    for name, words in damaged_checkpoints(tiny_run, tmp_path).items():
        with pytest.raises(CheckpointError, match=words):
            load_model(tmp_path / name)
        res = emotorch("predict", sample, "--model", str(tmp_path / name), "--json")
        assert res.returncode == 1 and words in res.stderr and res.stdout == "", (name, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # one line, no traceback
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    res = run_cli("serve", "--model", str(tmp_path / "nan.pt"), "--db", db, "--port", "1", quiet=False, timeout=120)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert "NaN or infinite" in res.stderr


def test_temperature_scaling_recovers_a_known_temperature():
    from emotorch.runtime.classifier import softmax
    from emotorch.training.evaluate import calibration, fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 7)) * 2
    labels = np.array([rng.choice(7, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3  # what an overconfident network would output
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3, rel=0.1)
    before = calibration(softmax(overconfident), labels)
    after = calibration(softmax(overconfident, t), labels)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]
