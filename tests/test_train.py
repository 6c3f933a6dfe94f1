from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_faces

from emotorch.runtime import registry
from emotorch.runtime.images import normalize
from emotorch.training import checkpoint
from emotorch.training.config import TrainConfig, config_from_preset
from emotorch.training.models import create_model
from emotorch.training.train import augment_batch, precise_batchnorm, train

TINY = dict(model="emonet", model_options={"width": 4}, batch_size=16, epochs=2, lr=0.02, warmup_epochs=0.5)


def tiny_config(data: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "data": str(data), **overrides})


def test_one_run_writes_checkpoints_events_log_and_plots(tiny_folders, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(tiny_folders), out, progress=False)
    names = {p.name for p in out.iterdir()}
    assert {
        "last.pt",
        "best.pt",
        "config.json",
        "log.jsonl",
        "curves.png",
        "confusion_matrix.png",
        "predictions.png",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert 0.0 <= result["accuracy"] <= 1.0 and result["n"] == 28
    # weights_only loading: a checkpoint holds only tensors and plain data
    ckpt = torch.load(out / "best.pt", weights_only=True)
    meta = ckpt["meta"]
    assert meta["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert meta["model"] == "emonet" and meta["model_options"] == {"width": 4}
    assert meta["input_size"] == [1, 48, 48] and meta["mean"] > 0 and meta["std"] > 0
    assert meta["data"]["train"]["n"] == 112 and "torch" in meta["versions"]
    assert "accuracy" in meta["val_metrics"]
    checkpoint.build_model(ckpt)


def test_existing_run_is_never_overwritten_without_force(tiny_folders, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        train(tiny_config(tiny_folders, epochs=1), out, progress=False)
    train(tiny_config(tiny_folders, epochs=1), out, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"  # --force removes only a run's own files


def _cli_train(data: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    opts = ["--model-option", "width=4", "--batch-size", "16", "--epochs", "4", "--lr", "0.02"]
    cmd = [sys.executable, "-m", "emotorch.cli", "-q", "train", "--data", str(data), "--out", str(out), *opts, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# Loaded by the interrupted run only (its PYTHONPATH): after epoch 1 is saved and logged the run says so and
# waits, so the signal always lands between epochs 1 and 2, however fast or slow the machine is.
PAUSE_AFTER_EPOCH_1 = """
import time
import emotorch.training.train as train

logged = train._log_epoch

def pause(writer, out, history, *args, **kwargs):
    logged(writer, out, history, *args, **kwargs)
    if len(history) == 1:
        (out / "paused").touch()
        time.sleep(300)

train._log_epoch = pause
"""


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    from conftest import write_image_folders

    root = tmp_path_factory.mktemp("resume")
    data = write_image_folders(root / "faces", {"train": 448, "val": 28})
    full = root / "full"
    assert _cli_train(data, full).wait() == 0
    return data, full


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_exactly(resume_data, tmp_path, sig):
    data, full = resume_data
    out = tmp_path / "run"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_AFTER_EPOCH_1)
    proc = _cli_train(data, out, env=os.environ | {"PYTHONPATH": str(hook)})
    deadline = time.time() + 120
    while not (out / "paused").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait()
    done = torch.load(out / "last.pt", weights_only=True)["history"]
    assert len(done) == 1, "the signal should have landed after epoch 1"
    # a fresh start into the same directory is refused; --resume continues it
    assert _cli_train(data, out).wait() == 2
    resumed = _cli_train(data, out, "--resume")
    assert resumed.wait() == 0, resumed.stderr.read()
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tiny_folders, tmp_path):
    """torchrun --nproc-per-node 2 (gloo, loopback) trains the same weights as one process."""
    opts = [
        "--model",
        "baseline",
        "--model-option",
        "dropout=0",
        "--augment",
        "none",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--no-amp",
    ]
    base = [sys.executable, "-m", "emotorch.cli", "-q", "train", "--data", str(tiny_folders), *opts]
    single = subprocess.run([*base, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        "29531",
    ]
    ddp = subprocess.run(
        [*torchrun, "-m", "emotorch.cli", *base[3:], "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert ddp.returncode == 0, ddp.stderr
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert b["meta"]["world_size"] == 2
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    assert a["history"][0]["train_loss"] == pytest.approx(b["history"][0]["train_loss"], rel=1e-4)


def test_augmentation_is_seeded_and_keeps_shape():
    x = torch.randn(8, 1, 48, 48)
    a = augment_batch(x, "standard", torch.Generator().manual_seed(1))
    b = augment_batch(x, "standard", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    flipped = augment_batch(x, "flip", torch.Generator().manual_seed(1))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True))


def test_presets_and_unknown_config_keys():
    seed = config_from_preset("seed")
    assert (seed.model, seed.optimizer, seed.lr, seed.batch_size, seed.epochs) == ("vgg19", "adam", 1e-4, 64, 25)
    assert config_from_preset("default").model == "emonet"
    # FER2013's accurate member recipe is the default one trained longer (its second member's config)
    assert config_from_preset("fer2013-accurate", seed=1) == config_from_preset("default", epochs=80, seed=1)
    fer2013_fast = config_from_preset("fer2013-fast")  # distilled from the FER2013 ensemble (it must exist)
    assert (fer2013_fast.model_options, fer2013_fast.teacher) == ({"width": 40}, "fer2013-accurate")
    # the FER+ models start from the FER2013 ones, shipped under their names, and learn the votes
    accurate, fast = config_from_preset("accurate"), config_from_preset("fast")
    assert accurate.init == "fer2013-accurate#0" and fast.init == "fer2013-fast" and fast.model_options["width"] == 40
    assert {accurate.targets, fast.targets} == {"crossentropy"}
    assert {fer2013_fast.teacher, accurate.init.split("#")[0], fast.init} <= set(registry.shipped())
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="balance must be one of"):
        TrainConfig(balance="oversample")


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_class_balancing_runs(tiny_folders, tmp_path, balance):
    result = train(tiny_config(tiny_folders, epochs=1, balance=balance), tmp_path / "run", progress=False)
    assert result["n"] == 28


def test_holdout_when_data_has_no_val_split(tmp_path):
    from conftest import write_image_folders

    data = write_image_folders(tmp_path / "faces", {"train": 140})
    result = train(tiny_config(data, epochs=1), tmp_path / "run", progress=False)
    assert result["n"] == 14  # 10% of each class held out


def test_seed_preset_trains_vgg19_with_its_head(tiny_folders, tmp_path):
    cfg = config_from_preset("seed", data=str(tiny_folders), epochs=1)
    result = train(cfg, tmp_path / "seed", progress=False)
    meta = torch.load(tmp_path / "seed" / "best.pt", weights_only=True)["meta"]
    assert meta["model"] == "vgg19" and meta["config"]["optimizer"] == "adam" and meta["config"]["batch_size"] == 64
    assert result["n"] == 28


def test_a_shipped_model_can_teach(tiny_folders, tmp_path):
    cfg = tiny_config(tiny_folders, epochs=1, model_options={"width": 2}, teacher="fer2013-fast")
    train(cfg, tmp_path / "student", progress=False)
    meta = torch.load(tmp_path / "student" / "best.pt", weights_only=True)["meta"]
    assert meta["config"]["teacher"] == "fer2013-fast"


def test_distillation_from_a_teacher_checkpoint(tiny_folders, tmp_path):
    train(tiny_config(tiny_folders, epochs=1), tmp_path / "teacher", progress=False)
    cfg = tiny_config(tiny_folders, epochs=1, model_options={"width": 2}, teacher=str(tmp_path / "teacher"))
    train(cfg, tmp_path / "student", progress=False)
    train(dataclasses.replace(cfg, teacher=None), tmp_path / "alone", progress=False)
    student = torch.load(tmp_path / "student" / "last.pt", weights_only=True)
    alone = torch.load(tmp_path / "alone" / "last.pt", weights_only=True)
    assert student["meta"]["config"]["teacher"] == str(tmp_path / "teacher")
    assert not torch.equal(student["model"]["head.3.weight"], alone["model"]["head.3.weight"])  # the teacher mattered


def test_init_starts_from_an_earlier_runs_weights(tiny_folders, tmp_path, capsys):
    from emotorch.cli import main

    train(tiny_config(tiny_folders, epochs=1), tmp_path / "first", progress=False)
    base = [
        "-q",
        "train",
        "--data",
        str(tiny_folders),
        "--model-option",
        "width=4",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--lr",
        "1e-12",
        "--augment",
        "none",
        "--init",
        str(tmp_path / "first"),
    ]
    assert main([*base, "--out", str(tmp_path / "again")]) == 0
    first = torch.load(tmp_path / "first" / "best.pt", weights_only=True)["model"]
    again = torch.load(tmp_path / "again" / "best.pt", weights_only=True)
    assert again["meta"]["config"]["init"] == str(tmp_path / "first")
    for name, weight in first.items():  # with a vanishing learning rate the weights stay where --init put them
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(again["model"][name], weight)
    assert main([*base, "--out", str(tmp_path / "wider"), "--model-option", "width=8"]) != 0
    assert "holds emonet {'width': 4}, not the emonet {'width': 8}" in capsys.readouterr().err


def test_precise_batchnorm_recomputes_statistics_on_clean_faces():
    torch.manual_seed(0)
    model = create_model("emonet", 7, width=4)
    faces, _ = synthetic_faces(48)
    bn = model.features[1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and torch.equal(bn.running_mean, torch.zeros(4))
    assert precise_batchnorm(model, faces, batch_size=16) is model and not model.training
    with torch.no_grad():  # three equal batches: the average of their means is the mean over all faces
        expected = model.features[0](normalize(torch.from_numpy(faces))).mean((0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
