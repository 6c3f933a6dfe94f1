from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, synthetic_faces

from emotorch.runtime.classifier import Classifier
from emotorch.runtime.registry import load_model
from emotorch.training.data import cache_dir

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from emotorch.runtime.session import OnnxModel  # noqa: E402
from emotorch.training.loading import onnx_backend  # noqa: E402


def test_cli_export_and_pytorch_onnx_agree(tiny_run, tmp_path):
    dest = tmp_path / "model.onnx"
    res = run_cli("export", "--model", str(tiny_run), "--format", "onnx", "--out", str(dest))
    assert res.returncode == 0, res.stderr
    meta = json.loads({p.key: p.value for p in onnx.load(str(dest)).metadata_props}["emotorch"])
    assert meta["classes"][4] == "neutral" and meta["input_size"] == [1, 48, 48]
    loaded = load_model(tiny_run)
    images, _ = synthetic_faces(37)  # an odd batch: the batch dimension is dynamic
    torch_probs = loaded.predict_proba(images)
    onnx_probs = Classifier(OnnxModel(dest), loaded.card, str(dest)).predict_proba(images)
    diff = np.abs(torch_probs - onnx_probs).max()
    assert diff < 1e-5, f"max abs difference on probabilities {diff}"
    again = run_cli("export", "--model", str(tiny_run), "--out", str(dest))
    assert again.returncode == 2 and "--force" in again.stderr


def test_onnx_backend_is_cached_and_agrees(tiny_run):
    loaded = load_model(tiny_run)
    fast = onnx_backend(loaded)
    images, _ = synthetic_faces(5)
    np.testing.assert_allclose(fast.predict_proba(images, tta=True), loaded.predict_proba(images, tta=True), atol=1e-5)
    onnx_backend(loaded)
    assert len(list((cache_dir() / "onnx").glob("*.onnx"))) == 1  # exported once, then reused


def test_cli_int8_export_is_quantised_and_close_to_float(tiny_run, tmp_path):
    from emotorch.training.data import load_dataset

    data = tiny_run.parent / "faces"
    dest = tmp_path / "model-int8.onnx"
    cmd = ["export", "--model", str(tiny_run), "--out", str(dest), "--int8"]
    missing = run_cli(*cmd)
    assert missing.returncode == 2 and "--int8 needs --data" in missing.stderr and not dest.exists()
    res = run_cli(*cmd, "--data", str(data))
    assert res.returncode == 0, res.stderr
    proto = onnx.load(str(dest))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert json.loads({p.key: p.value for p in proto.metadata_props}["emotorch"])["classes"][4] == "neutral"
    loaded = load_model(tiny_run)
    val = load_dataset(data, progress=False).split("val")
    float_probs = loaded.predict_proba(val.images)
    int8_probs = Classifier(OnnxModel(dest), loaded.card, str(dest)).predict_proba(val.images)
    assert np.abs(float_probs - int8_probs).mean() < 0.03
    assert (float_probs.argmax(1) == int8_probs.argmax(1)).mean() >= 0.9
