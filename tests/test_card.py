"""The model card: written and read in one place, whole, and refused in one line when it cannot be read."""

from __future__ import annotations

import numpy as np
import pytest

from emotorch.errors import CheckpointError
from emotorch.runtime.card import ModelCard
from emotorch.runtime.classifier import Classifier, softmax


def card() -> ModelCard:
    return ModelCard(
        "emonet",
        {"width": 4},
        ("angry", "happy", "neutral"),
        (1, 48, 48),
        0.5,
        0.25,
        temperature=2.0,
        provenance={"recipe": "emotorch train ...", "data": {"n": 3}},
    )


def test_a_card_reads_back_whole_and_keeps_what_it_does_not_name():
    stored = card().to_dict()
    assert stored["model"] == "emonet" and stored["model_options"] == {"width": 4} and stored["recipe"]
    assert "expressive_threshold" not in stored  # unset optional fields are not written
    assert ModelCard.from_dict(stored) == card()
    assert ModelCard.from_dict(stored | {"graph_sha256": "ab"}) == card()  # a file's digest is not the model's
    changed = card().replace(tta=True, epoch=3)
    assert changed.tta and changed.provenance["epoch"] == 3 and card().provenance.get("epoch") is None


@pytest.mark.parametrize(("broken", "words"), [({"classes": None}, "lacks classes"), ({"mean": "x"}, "metadata")])
def test_a_card_that_cannot_rebuild_its_model_names_where_it_came_from(broken, words):
    stored = {k: v for k, v in card().to_dict().items() if broken.get(k, 0) is not None} | {
        k: v for k, v in broken.items() if v is not None
    }
    with pytest.raises(CheckpointError, match=f"model.pt: damaged.*{words}"):
        ModelCard.from_dict(stored, "model.pt")


def test_a_classifier_applies_its_card():
    seen = []

    def net(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x)
        return {"logits": np.tile([[1.0, 2.0, 3.0]], (len(x), 1)).astype(np.float32)}

    model = Classifier(net, card(), "test")
    faces = np.full((2, 48, 48), 255, np.uint8)
    probs = model.predict_proba(faces)
    np.testing.assert_allclose(seen[0], (1.0 - 0.5) / 0.25)  # the card's normalisation
    np.testing.assert_allclose(probs, softmax(np.array([[1.0, 2.0, 3.0]] * 2), 2.0), rtol=1e-6)  # its temperature
    model.predict_proba(faces, tta=True)
    assert len(seen) == 1 + 10  # ten test-time views
