from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import synthetic_faces

from emotorch.runtime import registry
from emotorch.runtime.registry import load_model
from emotorch.runtime.session import OnnxModel
from emotorch.training import packaging
from emotorch.training.checkpoint import CheckpointError
from emotorch.training.loading import load_shipped, module_of


def test_package_and_load_by_name(tiny_run, weights_dir):
    import onnx

    from emotorch.training.checkpoint import load
    from emotorch.training.export import shipped_precision

    entry = packaging.package(
        tiny_run, "tiny", data=tiny_run.parent / "faces", recipe="emotorch train ...", precise_bn=False
    )
    assert entry["file"] == entry["onnx"] == "tiny.onnx" and not entry["onnx_int8"]
    assert entry["sha256"] == entry["onnx_sha256"] == registry.sha256(weights_dir / "tiny.onnx")
    assert entry["temperature"] > 0
    assert sorted(p.name for p in weights_dir.iterdir()) == ["manifest.json", "tiny.onnx"]  # one file: no checkpoint
    graph = onnx.load(weights_dir / "tiny.onnx").graph
    stored = {onnx.TensorProto.DataType.Name(i.data_type) for i in graph.initializer if not i.name.endswith("__scale")}
    assert stored <= {"INT8", "FLOAT16", "INT64"} and {"INT8", "FLOAT16"} <= stored  # filters int8, the rest float16
    full = load_model("tiny", "torch")  # PyTorch reads the weights back from the ONNX file
    card = full.card
    assert card.provenance["recipe"] == "emotorch train ..."
    assert card.provenance["calibration"]["fitted_on"] == "val labels"
    assert card.val_metrics and card.name == "tiny" and "hardware" in card.provenance
    expected = shipped_precision(load(tiny_run)["model"])
    for key, value in module_of(full).state_dict().items():
        if not key.endswith("num_batches_tracked"):  # what was rounded comes back bit for bit
            assert torch.equal(value, expected[key]), key
    shipped = load_model("tiny")  # its ONNX file: no PyTorch needed
    assert isinstance(shipped.net, OnnxModel) and shipped.card == card
    images, _ = synthetic_faces(9)
    probs = shipped.predict_proba(images)
    np.testing.assert_allclose(probs, full.predict_proba(images), atol=1e-4)
    original = load_model(tiny_run)
    raw = replace(original, card=original.card.replace(temperature=card.temperature)).predict_proba(images)
    np.testing.assert_allclose(probs, raw, atol=2e-2)  # int8 filters and float16 change little


def test_shipped_precision_rounds_filters_per_channel_and_the_rest_to_float16():
    from emotorch.training.export import shipped_precision

    weight = torch.tensor([[0.5, -1.27, 0.003], [0.0, 0.0, 0.0], [2.0, 1.0, -0.01]])
    state = shipped_precision({"w": weight, "b": torch.tensor([0.1]), "n": torch.tensor(3)})
    assert state["w"][0].tolist() == pytest.approx([0.5, -1.27, 0.0], abs=1e-7)  # steps of 1.27 / 127
    assert state["w"][1].tolist() == [0.0, 0.0, 0.0]  # an all-zero channel stays zero
    assert state["w"][2, 0] == 2.0 and abs(state["w"][2, 2]) in (0.0, pytest.approx(2 / 127))
    assert state["b"].item() == torch.tensor(0.1).half().item() and state["n"].item() == 3


def test_package_recomputes_batchnorm_statistics_on_the_training_faces(tiny_run, weights_dir):
    from emotorch.cli import main

    args = ["-q", "package", str(tiny_run), "--data", str(tiny_run.parent / "faces"), "--recipe", "r"]
    assert main([*args, "--name", "precise"]) == 0 and main([*args, "--name", "raw", "--no-precise-bn"]) == 0
    run = torch.load(tiny_run / "best.pt", weights_only=True)
    precise, raw = (load_model(n, "torch") for n in ("precise", "raw"))
    assert precise.card.provenance["precise_bn_faces"] == 112 and raw.card.provenance["precise_bn_faces"] == 0
    key = "features.1.running_mean"
    torch.testing.assert_close(module_of(raw).state_dict()[key], run["model"][key], atol=1e-2, rtol=1e-2)
    assert not torch.allclose(module_of(precise).state_dict()[key], run["model"][key], atol=1e-2, rtol=1e-2)
    assert registry.shipped()["precise"]["val_accuracy"] == precise.card.val_metrics["accuracy"]


def test_damaged_or_unknown_shipped_model(tiny_run, weights_dir):
    packaging.package(tiny_run, "tiny", data=tiny_run.parent / "faces", recipe="r")
    with pytest.raises(CheckpointError, match="no shipped model 'huge'"):
        load_shipped("huge")
    path = weights_dir / "tiny.onnx"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    for load in (load_shipped, load_model):  # on PyTorch and on ONNX Runtime
        with pytest.raises(CheckpointError, match="damaged"):
            load("tiny")


def test_package_int8_ships_an_onnx_file_that_serves_by_default(tiny_run, weights_dir):
    from emotorch.runtime.pipeline import EmotionRecognizer

    entry = packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r", int8=True)
    assert entry["file"] == "tiny8.onnx" and entry["onnx"] == "tiny8-int8.onnx"
    assert entry["onnx_sha256"] == registry.sha256(weights_dir / "tiny8-int8.onnx")
    shipped = load_model("tiny8")
    assert shipped.onnx == weights_dir / "tiny8-int8.onnx" and entry["onnx_int8"]
    full = load_model("tiny8", "torch").card
    assert full.provenance["calibration_faces"] == 112 and 0 <= full.provenance["float_val_accuracy"] <= 1
    assert full == shipped.card  # both files describe what is served
    assert isinstance(EmotionRecognizer("tiny8").model.net, OnnxModel)  # the model's own setting: int8
    assert not isinstance(EmotionRecognizer("tiny8", backend="torch").model.net, OnnxModel)
    packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r")  # re-shipped without int8
    assert not registry.shipped()["tiny8"]["onnx_int8"] and not (weights_dir / "tiny8-int8.onnx").exists()
    assert load_model("tiny8").onnx == weights_dir / "tiny8.onnx"


def test_a_damaged_int8_file_is_refused(tiny_run, weights_dir):
    pytest.importorskip("onnxruntime")
    packaging.package(tiny_run, "tiny8", data=tiny_run.parent / "faces", recipe="r", int8=True)
    with open(weights_dir / "tiny8-int8.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(CheckpointError, match="damaged"):
        load_model("tiny8")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(registry.shipped()))
def test_the_shipped_models_read_the_sample_photo_alike_with_and_without_torch(name):
    """Every shipped model ships ONNX; its float file gives the torch path's probabilities within 1e-4."""
    from pathlib import Path

    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.training.data import load_dataset

    pytest.importorskip("yuface", reason="the YuNet detector package is not installed")
    entry = registry.shipped()[name]
    lean, full = load_model(name), load_model(name, "torch")  # both sha256-checked
    assert isinstance(lean.net, OnnxModel) and lean.card == full.card
    assert lean.classes[4] == "neutral" and lean.card.temperature > 0
    assert lean.card.val_metrics["accuracy"] == entry["val_accuracy"]
    sample = registry.WEIGHTS.parent / "samples" / "astronaut.jpg"
    faces = EmotionRecognizer(name).predict(sample)
    assert len(faces) == 1 and faces[0].emotion == "happy"
    if entry["onnx_int8"]:  # int8: what its metrics describe, and what the full install serves too
        assert isinstance(EmotionRecognizer(name, backend="auto").model.net, OnnxModel)
        lean = load_model(registry.shipped_path(name))  # its float file, whose weights PyTorch reads
    else:
        on_torch = EmotionRecognizer(name, backend="torch").predict(sample)[0].probabilities
        assert all(abs(faces[0].probabilities[c] - on_torch[c]) <= 1e-4 for c in on_torch)
    ferplus = Path(__file__).resolve().parents[1] / ".." / "shared" / "ferplus"
    images = (
        load_dataset(ferplus, progress=False).split("val").images[:64] if ferplus.is_dir() else synthetic_faces(64)[0]
    )
    np.testing.assert_allclose(lean.predict_proba(images), full.predict_proba(images), atol=1e-4)


def test_photos_default_to_the_accurate_model():
    from emotorch.runtime.pipeline import EmotionRecognizer

    assert EmotionRecognizer().model.name == registry.PHOTO_MODEL == "accurate"


def test_package_an_ensemble_of_runs(tiny_run, weights_dir, tmp_path):
    from emotorch.runtime.classifier import softmax
    from emotorch.training.checkpoint import load
    from emotorch.training.config import TrainConfig
    from emotorch.training.train import train

    data = tiny_run.parent / "faces"
    other = tmp_path / "other"
    train(TrainConfig(data=str(data), model="baseline", batch_size=16, epochs=1, seed=3), other, progress=False)
    entry = packaging.package([tiny_run, other], "pair", data=data, recipe="two runs", precise_bn=False)
    assert entry["architecture"] == "ensemble"
    shipped = load_model("pair")  # one ONNX graph
    assert [m["model"] for m in shipped.card.options["members"]] == ["emonet", "baseline"]
    assert [m["run"] for m in load_model("pair", "torch").card.provenance["members"]] == [str(tiny_run), str(other)]
    images, _ = synthetic_faces(9)
    members = [load_model(tiny_run), load_model(other)]
    mean_log = np.mean([np.log(softmax(m.predict_logits(images))) for m in members], 0)
    expected = softmax(mean_log, shipped.card.temperature)
    np.testing.assert_allclose(shipped.predict_proba(images), expected, atol=2e-2)
    ckpt = load(other / "best.pt")
    ckpt["meta"]["mean"] = 0.1
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="mean differ"):
        packaging.package([tiny_run, tmp_path / "odd.pt"], "bad", data=data, recipe="r")


def damaged_copies(source, folder):
    """Copies of ``source`` with its weights damaged as a disk or a download would: random bytes, zeros,
    0xff, and ten flipped bits, each in the middle of the file (where the weights are)."""
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    rng = np.random.default_rng(0)
    kinds = {"random": bytes(rng.integers(0, 256, 4096, np.uint8)), "zeros": bytes(65536), "ones": b"\xff" * 65536}
    for kind, patch in kinds.items():
        copy = bytearray(data)
        copy[middle : middle + len(patch)] = patch
        (folder / f"{kind}.onnx").write_bytes(bytes(copy))
        yield folder / f"{kind}.onnx"
    flipped = bytearray(data)
    for at in rng.integers(middle - 100_000, middle + 100_000, 10):
        flipped[at] ^= 1 << int(rng.integers(0, 8))
    (folder / "bits.onnx").write_bytes(bytes(flipped))
    yield folder / "bits.onnx"


@pytest.mark.parametrize("name", ["fast", "accurate"])
def test_damaged_model_files_are_refused_on_load(tmp_path, name):
    from emotorch.training.export import set_metadata

    original = tmp_path / f"{name}.onnx"
    original.write_bytes(registry.shipped_path(name, "onnx").read_bytes())
    set_metadata(original, load_model(original).card)  # as every file this project writes: with its digest
    assert OnnxModel(original).metadata()["graph_sha256"] and load_model(original)  # the intact copy loads
    for damaged in damaged_copies(original, tmp_path):
        with pytest.raises(CheckpointError, match=r"damaged|not a readable ONNX model"):
            load_model(damaged)


def test_a_model_answering_nan_is_refused(tmp_path):
    import json

    import onnx
    from onnx import numpy_helper

    proto = onnx.load(registry.shipped_path("fast"))
    for init in proto.graph.initializer:  # a batch-norm value turned NaN, in a file written without a digest
        if init.name.endswith("__fp16"):
            value = numpy_helper.to_array(init).copy()
            value.flat[0] = np.nan
            init.CopyFrom(numpy_helper.from_array(value, init.name))
            break
    else:
        pytest.fail("no batch-norm initializer found")
    entry = next(p for p in proto.metadata_props if p.key == "emotorch")
    entry.value = json.dumps({k: v for k, v in json.loads(entry.value).items() if k != "graph_sha256"})
    onnx.save(proto, tmp_path / "nan.onnx")
    with pytest.raises(CheckpointError, match="NaN or infinity"):
        load_model(tmp_path / "nan.onnx")
