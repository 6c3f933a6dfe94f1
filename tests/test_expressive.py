"""The expressive head: fitted on FER2013 labels over a frozen network, shipped as a second ONNX output, read
by the expressive reading; the network's own logits (the crowd reading) unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import synthetic_faces

from emotorch.choices import CLASSES, FERPLUS_CLASSES
from emotorch.runtime.card import ModelCard
from emotorch.runtime.pipeline import EmotionRecognizer
from emotorch.runtime.reading import NEUTRAL, answer, chosen, fit_offsets, mean_recall
from emotorch.runtime.registry import load_model
from emotorch.training import packaging
from emotorch.training.data import FaceSet
from emotorch.training.loading import module_of
from emotorch.training.models import create_model
from emotorch.training.models.expressive import WithExpressiveHead, pooled


def test_the_head_leaves_the_network_logits_as_they_were():
    torch.manual_seed(0)
    members = [{"model": "emonet", "model_options": {"width": 4}}] * 2
    base = create_model("ensemble", 8, members=members).eval()
    model = WithExpressiveHead(base, 8, blend=0.25).eval()
    x = torch.randn(3, 1, 48, 48)
    logits, scores = model(x)
    torch.testing.assert_close(logits, base(x))
    features, _ = pooled(base, x)
    assert features.shape == (3, 2 * 32)  # two members, 8 x width channels each
    head = model.expressive(features).softmax(-1)
    torch.testing.assert_close(scores.exp(), 0.75 * logits.softmax(-1) + 0.25 * head)  # offsets start at 0
    with pytest.raises(ValueError, match="emonet or an ensemble"):
        WithExpressiveHead(create_model("baseline", 7), 7, 0.5)


def test_offsets_raise_mean_recall_and_leave_the_fixed_class_alone():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    scores = np.log(rng.dirichlet(np.ones(3), 150)) + np.array([0.0, 0.0, -2.0])  # class 2 starved
    offsets = fit_offsets(scores, labels, fixed=0)
    assert offsets[0] == 0 and offsets[2] > 0
    assert mean_recall(labels, (scores + offsets).argmax(1)) > mean_recall(labels, scores.argmax(1))


def test_package_with_an_expressive_head_ships_both_outputs(tiny_run, weights_dir):
    data = tiny_run.parent / "faces"
    plain = packaging.package(tiny_run, "tiny", data=data, recipe="r", precise_bn=False)
    entry = packaging.package(
        "tiny",
        "tinyx",
        data=data,
        recipe="r; again",
        precise_bn=False,
        expressive=data,
        blend=0.6,
        offset_scale=1.0,
        int8=True,
    )  # the shipped model again, by its name, now with a head
    assert entry["architecture"] == "expressive" and plain["architecture"] == "emonet"
    # without a head, FER2013's labels fit a threshold for the expressive reading instead
    assert 0 < plain["expressive_threshold"] == load_model("tiny").card.expressive_threshold < 1
    assert "expressive_threshold" not in entry
    for file in ("tinyx.onnx", "tinyx-int8.onnx"):
        assert [o.name for o in onnx.load(weights_dir / file).graph.output] == ["logits", "expressive"]
    model = load_model("tinyx")  # the int8 file it serves
    card = model.card
    assert card.expressive_head and card.expressive_threshold is None
    assert card.options["base"]["model"] == "emonet" and card.options["blend"] == 0.6
    fit = card.provenance["expressive_head_fit"]
    assert fit["train_faces"] == 112 and len(fit["offsets"]) == 7 and fit["offsets"][CLASSES.index(NEUTRAL)] == 0
    images, _ = synthetic_faces(14, seed=5)
    outputs = model.predict_outputs(images)
    assert set(outputs) == {"logits", "expressive"}
    probs, picked = model.predict(images, reading="expressive")
    assert picked.tolist() == outputs["expressive"].argmax(1).tolist()
    np.testing.assert_array_equal(model.predict(images)[1], probs.argmax(1))  # crowd: the top probability
    # the crowd's probabilities are the plain model's: the network is frozen under the head
    torch_model = load_model("tinyx", "torch")  # PyTorch reads both heads back from the ONNX file
    plain_model = load_model("tiny", "torch")
    np.testing.assert_allclose(torch_model.predict_logits(images), plain_model.predict_logits(images), atol=1e-5)
    assert isinstance(module_of(torch_model), WithExpressiveHead)
    np.testing.assert_allclose(
        torch_model.predict_outputs(images)["expressive"],
        load_model(weights_dir / "tinyx.onnx").predict_outputs(images)["expressive"],
        atol=1e-4,
    )
    recognizer = EmotionRecognizer("tinyx", reading="expressive")
    assert recognizer.classify([np.zeros((60, 60, 3), np.uint8)], [[]]) == [[]]
    again = packaging.package("tinyx", "tinyx2", data=data, recipe="r", precise_bn=False, expressive=data)
    assert again["parameters"] == entry["parameters"]  # a new head replaces the old one, not a head on a head
    assert load_model("tinyx2").card.options["base"] == card.options["base"]


def test_the_head_learns_contempt_from_the_crowd_faces(tiny_run):
    """FER2013 has no contempt: the head learns it from the crowd's training faces whose majority names it."""
    torch.manual_seed(0)
    module = create_model("emonet", len(FERPLUS_CLASSES), width=4).eval()
    card = ModelCard("emonet", {"width": 4}, FERPLUS_CLASSES, (1, 48, 48), 0.5, 0.25)
    fer2013 = tiny_run.parent / "faces"  # 112 training faces over FER2013's seven classes
    rng = np.random.default_rng(1)
    bright = rng.integers(200, 256, size=(24, 48, 48)).astype(np.uint8)  # contempt's faces: plainly other
    images = np.concatenate([bright, synthetic_faces(8, seed=3)[0]])
    labels = np.r_[np.full(24, FERPLUS_CLASSES.index("contempt")), np.arange(8) % 7]
    crowd = FaceSet(images, labels, [f"f{i}.png" for i in range(32)], classes=FERPLUS_CLASSES, votes=np.zeros((32, 10)))
    contempt = FERPLUS_CLASSES.index("contempt")
    test = rng.integers(200, 256, size=(6, 48, 48)).astype(np.uint8)

    def answers(model: WithExpressiveHead) -> np.ndarray:
        return model(torch.from_numpy(card.preprocess(test)))[1].argmax(1).numpy()

    taught, taught_card = packaging.fit_expressive_head(module, card, fer2013, crowd=crowd, crowd_weight=1.0, blend=1.0)
    assert (answers(taught) == contempt).all()
    fit = taught_card.provenance["expressive_head_fit"]
    assert fit["crowd_faces"] == {"contempt": 24} and fit["crowd_weight"] == 1.0
    untaught, untaught_card = packaging.fit_expressive_head(module, card, fer2013, blend=1.0)  # no crowd: never
    assert not (answers(untaught) == contempt).any()
    assert untaught_card.provenance["expressive_head_fit"]["crowd_faces"] == {}


def test_training_can_start_from_a_model_with_an_expressive_head(tiny_run, weights_dir, tmp_path):
    from emotorch.training.config import TrainConfig
    from emotorch.training.train import train

    data = tiny_run.parent / "faces"
    packaging.package(tiny_run, "tinyx", data=data, recipe="r", precise_bn=False, expressive=data)
    cfg = TrainConfig(data=str(data), model="emonet", model_options={"width": 4}, batch_size=16, epochs=1, init="tinyx")
    train(cfg, tmp_path / "run", progress=False)  # the network under the head: its weights, not the head's
    assert (tmp_path / "run" / "best.pt").is_file()


def test_the_expressive_reading_reads_the_head_when_there_is_one():
    probs = np.array([[0.1, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0]])
    scores = np.log(np.array([[0.6, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0]]) + 1e-9)
    assert answer(probs, CLASSES, "expressive", None, scores).tolist() == [0]
    assert answer(probs, CLASSES, "crowd", None, scores).tolist() == [4]
    with pytest.raises(ValueError, match="no expressive threshold"):
        answer(probs, CLASSES, "expressive", None)


def test_the_default_reading_is_expressive_where_the_model_can_read_it(tiny_run, weights_dir):
    data = tiny_run.parent / "faces"
    packaging.package(tiny_run, "tinyx", data=data, recipe="r", precise_bn=False, expressive=data)
    assert EmotionRecognizer("tinyx").reading == "expressive"
    assert EmotionRecognizer(tiny_run).reading == "crowd"  # a training run has neither head nor threshold
    assert EmotionRecognizer("tinyx", reading="crowd").reading == "crowd"
    assert chosen(None, load_model("tinyx").card) == "expressive"
    assert chosen("crowd", load_model("tinyx").card) == "crowd"
