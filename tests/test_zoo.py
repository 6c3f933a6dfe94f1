from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_faces

from emotorch import packaging, zoo
from emotorch.checkpoint import CheckpointError
from emotorch.inference import OnnxModel, load_model, predict_proba


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path / "weights")
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "weights" / "manifest.json")
    zoo._verified.cache_clear()
    yield tmp_path / "weights"
    zoo._verified.cache_clear()


def test_package_and_load_by_name(tiny_run, weights_dir):
    entry = packaging.package(tiny_run, "tiny", data=tiny_run.parent / "faces", recipe="emotorch train ...",
                              precise_bn=False)
    assert entry["file"] == "tiny.pt" and len(entry["sha256"]) == 64 and entry["temperature"] > 0
    ckpt = torch.load(weights_dir / "tiny.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    meta = ckpt["meta"]
    assert meta["recipe"] == "emotorch train ..." and meta["calibration"]["fitted_on"] == "val labels"
    assert {"classes", "input_size", "mean", "std", "model", "val_metrics", "hardware"} <= set(meta)
    shipped = load_model("tiny")  # its ONNX file: no PyTorch needed
    assert isinstance(shipped.model, OnnxModel) and shipped.meta["val_metrics"] == meta["val_metrics"]
    assert entry["onnx"] == "tiny.onnx" and not entry["onnx_int8"]
    images, _ = synthetic_faces(9)
    probs = predict_proba(shipped.model, images, shipped.meta)
    full = load_model("tiny", "torch")  # the float16 weights on PyTorch
    np.testing.assert_allclose(probs, predict_proba(full.model, images, full.meta), atol=1e-4)
    original = load_model(tiny_run)
    raw = predict_proba(original.model, images, original.meta | {"temperature": meta["temperature"]})
    np.testing.assert_allclose(probs, raw, atol=2e-2)  # float16 storage changes little


def test_package_recomputes_batchnorm_statistics_on_the_training_faces(tiny_run, weights_dir):
    from emotorch.cli import main

    args = ["-q", "package", str(tiny_run), "--data", str(tiny_run.parent / "faces"), "--recipe", "r"]
    assert main([*args, "--name", "precise"]) == 0 and main([*args, "--name", "raw", "--no-precise-bn"]) == 0
    run = torch.load(tiny_run / "best.pt", weights_only=True)
    precise, raw = (torch.load(weights_dir / f"{n}.pt", weights_only=True) for n in ("precise", "raw"))
    assert precise["meta"]["precise_bn_faces"] == 112 and raw["meta"]["precise_bn_faces"] == 0
    key = "features.1.running_mean"
    torch.testing.assert_close(raw["model"][key].float(), run["model"][key], atol=1e-2, rtol=1e-2)
    assert not torch.allclose(precise["model"][key].float(), run["model"][key], atol=1e-2, rtol=1e-2)
    assert zoo.shipped()["precise"]["val_accuracy"] == precise["meta"]["val_metrics"]["accuracy"]


def test_damaged_or_unknown_shipped_model(tiny_run, weights_dir):
    packaging.package(tiny_run, "tiny", data=tiny_run.parent / "faces", recipe="r")
    with pytest.raises(CheckpointError, match="no shipped model 'huge'"):
        zoo.load_shipped("huge")
    path = weights_dir / "tiny.pt"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="damaged"):
        zoo.load_shipped("tiny")


def test_package_int8_ships_an_onnx_file_that_serves_by_default(tiny_run, weights_dir):
    from emotorch.pipeline import EmotionRecognizer

    entry = packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r", int8=True)
    assert entry["onnx"] == "tiny8.onnx" and entry["onnx_sha256"] == zoo.sha256(weights_dir / "tiny8.onnx")
    shipped = load_model("tiny8")
    assert shipped.onnx == weights_dir / "tiny8.onnx" and entry["onnx_int8"]
    full = load_model("tiny8", "torch").meta
    assert full["calibration_faces"] == 112 and 0 <= full["float_val_accuracy"] <= 1
    assert isinstance(EmotionRecognizer("tiny8").model.model, OnnxModel)  # the model's own setting: int8
    assert not isinstance(EmotionRecognizer("tiny8", backend="torch").model.model, OnnxModel)
    int8_size = (weights_dir / "tiny8.onnx").stat().st_size
    packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r")  # re-shipped without int8
    assert not zoo.shipped()["tiny8"]["onnx_int8"] and (weights_dir / "tiny8.onnx").stat().st_size != int8_size


def test_a_damaged_int8_file_is_refused(tiny_run, weights_dir):
    pytest.importorskip("onnxruntime")
    packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r", int8=True)
    with open(weights_dir / "tiny8.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(CheckpointError, match="damaged"):
        zoo.load_shipped("tiny8")


@pytest.mark.parametrize("name", sorted(zoo.shipped()))
def test_the_shipped_models_read_the_sample_photo_alike_with_and_without_torch(name):
    """Every shipped model ships ONNX; its lean path gives the torch path's probabilities within 1e-4."""
    from pathlib import Path

    from emotorch.data import load_dataset
    from emotorch.pipeline import EmotionRecognizer

    pytest.importorskip("yuface", reason="the YuNet detector package is not installed")
    entry = zoo.shipped()[name]
    lean, full = load_model(name), load_model(name, "torch")  # both sha256-checked
    assert isinstance(lean.model, OnnxModel) and lean.meta["classes"] == full.meta["classes"]
    assert lean.meta["classes"][4] == "neutral" and lean.meta["temperature"] == full.meta["temperature"] > 0
    assert lean.meta["val_metrics"]["accuracy"] == entry["val_accuracy"]
    sample = Path(zoo.__file__).with_name("samples") / "astronaut.jpg"
    faces = EmotionRecognizer(name).predict(sample)
    assert len(faces) == 1 and faces[0].emotion == "happy"
    if entry["onnx_int8"]:  # int8: what its metrics describe, and what the full install serves too
        assert isinstance(EmotionRecognizer(name, backend="auto").model.model, OnnxModel)
        return
    on_torch = EmotionRecognizer(name, backend="torch").predict(sample)[0].probabilities
    assert all(abs(faces[0].probabilities[c] - on_torch[c]) <= 1e-4 for c in on_torch)
    ferplus = Path(__file__).resolve().parents[1] / ".." / "shared" / "ferplus"
    images = load_dataset(ferplus, progress=False).split("val").images[:256] if ferplus.is_dir() else \
        synthetic_faces(64)[0]  # fmt: skip
    np.testing.assert_allclose(predict_proba(lean.model, images, lean.meta),
                               predict_proba(full.model, images, full.meta), atol=1e-4)  # fmt: skip


def test_photos_default_to_the_accurate_model():
    from emotorch.pipeline import EmotionRecognizer

    assert EmotionRecognizer().model.meta["name"] == zoo.PHOTO_MODEL == "accurate"


def test_package_an_ensemble_of_runs(tiny_run, weights_dir, tmp_path):
    from emotorch.checkpoint import load
    from emotorch.config import TrainConfig
    from emotorch.inference import predict_logits, softmax
    from emotorch.train import train

    data = tiny_run.parent / "faces"
    other = tmp_path / "other"
    train(TrainConfig(data=str(data), model="baseline", batch_size=16, epochs=1, seed=3), other, progress=False)
    entry = packaging.package([tiny_run, other], "pair", data=data, recipe="two runs", precise_bn=False)
    assert entry["architecture"] == "ensemble"
    shipped = load_model("pair")  # one ONNX graph
    assert [m["model"] for m in shipped.meta["model_options"]["members"]] == ["emonet", "baseline"]
    assert [m["run"] for m in load_model("pair", "torch").meta["members"]] == [str(tiny_run), str(other)]
    images, _ = synthetic_faces(9)
    members = [load_model(tiny_run), load_model(other)]
    mean_log = np.mean([np.log(softmax(predict_logits(m.model, images, m.meta))) for m in members], 0)
    expected = softmax(mean_log, shipped.meta["temperature"])
    np.testing.assert_allclose(predict_proba(shipped.model, images, shipped.meta), expected, atol=2e-2)
    ckpt = load(other / "best.pt")
    ckpt["meta"]["mean"] = 0.1
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="mean differ"):
        packaging.package([tiny_run, tmp_path / "odd.pt"], "bad", data=data, recipe="r")
