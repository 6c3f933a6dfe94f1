"""Shipping models inside the package (maintainers): a run, or an ensemble of runs, becomes an ONNX
file in ``emotorch/weights`` (one graph, also for an ensemble; weights int8 per channel and
float16, from which PyTorch reads them back), plus an int8 file on request, with their sha256 in
the manifest and a temperature fitted on val. What is measured is what ONNX Runtime serves.
:mod:`emotorch.runtime.registry` reads what this writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emotorch.errors import CheckpointError
from emotorch.runtime import registry
from emotorch.runtime.card import ModelCard
from emotorch.runtime.classifier import Classifier, softmax
from emotorch.runtime.reading import fit_threshold
from emotorch.runtime.session import OnnxModel
from emotorch.training import checkpoint
from emotorch.training.data import load_dataset
from emotorch.training.evaluate import (
    calibration,
    compute_metrics,
    fit_temperature,
    restrict,
    scorable,
    score,
    vote_distribution,
)
from emotorch.training.export import calibration_sample, export_onnx, quantize_onnx, set_metadata, shipped_precision
from emotorch.training.train import precise_batchnorm

PREPROCESSING = ("classes", "input_size", "mean", "std")  # the card fields ensemble members must share


def combine(runs: list[str | Path]) -> dict[str, Any]:
    """One checkpoint from one run, or an ``ensemble`` checkpoint of several (same classes and input)."""
    ckpts = [checkpoint.load(run) for run in runs]
    if len(ckpts) == 1:
        return ckpts[0]
    cards = [ModelCard.from_dict(c["meta"], run) for run, c in zip(runs, ckpts, strict=True)]
    first = cards[0]
    for run, card in zip(runs[1:], cards[1:], strict=True):
        differ = [k for k in PREPROCESSING if getattr(card, k) != getattr(first, k)]
        if differ:
            raise CheckpointError(
                f"{run}: its {', '.join(differ)} differ from {runs[0]}'s; "
                "ensemble members must share classes and preprocessing"
            )
    state = {f"members.{i}.{k}": v for i, c in enumerate(ckpts) for k, v in c["model"].items()}
    keep = ("epoch", "train_seconds", "hardware", "config", "world_size")  # each member's provenance
    members = [
        {"run": str(run), "val_metrics": c.val_metrics, "parameters": c.parameters}
        | {k: c.provenance[k] for k in keep if k in c.provenance}
        for run, c in zip(runs, cards, strict=True)
    ]
    card = ModelCard(
        "ensemble",
        {"members": [{"model": c.architecture, "model_options": dict(c.options)} for c in cards]},
        first.classes,
        first.input_size,
        first.mean,
        first.std,
        parameters=sum(c.parameters or 0 for c in cards),
        provenance={
            "train_seconds": sum(c.provenance.get("train_seconds", 0.0) for c in cards),
            "hardware": first.provenance.get("hardware"),
            "versions": first.provenance.get("versions"),
            "data": first.provenance.get("data"),
            "members": members,
        },
    )
    return {"format": checkpoint.FORMAT, "model": state, "meta": card.to_dict(), "history": []}


def package(
    runs: str | Path | list[str | Path],
    name: str,
    *,
    data: str | Path,
    recipe: str,
    tta: bool = False,
    int8: bool = False,
    precise_bn: bool = True,
) -> dict[str, Any]:
    """Ship a run's best checkpoint (or an ensemble of several runs) as ``name``: its weights rounded to
    int8 per channel (float16 for batch norm and biases) in ``name.onnx``, and with ``int8`` also
    ``name-int8.onnx`` (weights and activations int8, calibrated on training faces), which the
    model then serves. What it serves is what the val metrics and the temperature (fitted on val:
    to the crowd's votes where the data has them) describe. With ``precise_bn`` the batch-norm
    statistics are first recomputed on the clean training faces. Returns the manifest entry;
    ``recipe`` is the command(s) that reproduce the run(s).
    """
    ckpt = combine(runs if isinstance(runs, list) else [runs])
    card = ModelCard.from_dict(ckpt["meta"], runs)
    faces = load_dataset(data, progress=False)
    train = faces.split("train")
    val, left_out = scorable(faces.split("val"), list(card.classes))
    extra: dict[str, Any] = {
        "precise_bn_faces": len(train) if precise_bn else card.provenance.get("precise_bn_faces", 0)
    }
    trained = checkpoint.build_model(ckpt)
    if precise_bn:
        trained = precise_batchnorm(trained, train.images, card.mean, card.std)
        ckpt["model"] = trained.state_dict()
    model = checkpoint.build_model(ckpt | {"model": shipped_precision(ckpt["model"])})  # measure what ships
    registry.WEIGHTS.mkdir(exist_ok=True)
    path, int8_path = registry.WEIGHTS / f"{name}.onnx", registry.WEIGHTS / f"{name}-int8.onnx"
    for stale in (path, int8_path):  # a file must not outlive the weights it came from
        stale.unlink(missing_ok=True)
    export_onnx(model, card, path, compact=True)  # every model ships ONNX: inference needs no PyTorch
    served = path
    if int8:
        sample = calibration_sample(train)
        # from the trained weights: quantised once, not on top of the int8 rounding
        served = quantize_onnx(trained, card, int8_path, sample)
        float_pred = Classifier(OnnxModel(path), card, name).predict_logits(val.images, tta=tta).argmax(1)
        extra |= {
            "calibration_faces": len(sample),
            "float_val_accuracy": compute_metrics(val.labels, float_pred, val.classes)["accuracy"],
        }
    # what ships is what is measured
    logits = Classifier(OnnxModel(served), card, name).predict_logits(val.images, tta=tta)
    # with crowd votes the probabilities are fitted to what the taggers said, else to the labels
    votes = val.votes is not None
    temperature = fit_temperature(logits, vote_distribution(val.votes, val.classes) if votes else val.labels)
    before = calibration(softmax(logits), val.labels)
    metrics = score(softmax(logits, temperature), val) | {"left_out": left_out}
    card = card.replace(
        name=name,
        temperature=temperature,
        tta=tta,
        val_metrics=metrics,
        recipe=recipe,
        **extra,
        **{
            "calibration": {
                "ece_before": before["ece"],
                "ece_after": metrics["ece"],
                "fitted_on": "val votes" if votes else "val labels",
            },
            "licence": "MIT (weights trained by the EmoTorch project on FER2013, a research data set"
            + (", with the FER+ crowd labels of Microsoft, MIT)" if votes else ")"),
            "onnx": served.name,
            "onnx_int8": int8,
        },
    )
    for written in {path, served}:
        set_metadata(written, card)  # now with the temperature fitted on its own logits
    entry = {
        "file": path.name,
        "sha256": registry.sha256(path),
        "architecture": card.architecture,
        "classes": list(card.classes),
        "parameters": card.parameters,
        "val_accuracy": metrics["accuracy"],
        "val_macro_f1": metrics["macro_f1"],
        "tta": tta,
        "temperature": temperature,
        "onnx": served.name,
        "onnx_int8": int8,
        "onnx_sha256": registry.sha256(served),
    }
    registry.MANIFEST.write_text(json.dumps(registry.shipped() | {name: entry}, indent=2) + "\n")
    registry.forget_verified()
    return entry


def fit_expressive(model: Classifier, fer2013: str | Path) -> float:
    """The model's expressive threshold (:func:`emotorch.runtime.reading.fit_threshold`), fitted on the val split
    of FER2013-labelled data, with the model's own test-time setting."""
    faces = load_dataset(fer2013, progress=False).split("val")
    val, _ = scorable(faces, model.classes)
    probs = model.predict_proba(val.images)
    return fit_threshold(restrict(probs, val.classes, faces.classes), val.labels, val.classes)


def restamp(name: str, *, fer2013: str | Path) -> dict[str, Any]:
    """Write a shipped model's card again: its expressive threshold fitted on ``fer2013``'s val labels and
    the digest of its graph (checked on every load); the manifest gets the files' new sha256."""
    entry = registry.shipped()[name]
    model = registry.load_model(name)
    card = model.card.replace(expressive_threshold=fit_expressive(model, fer2013))
    for file in {entry["file"], entry["onnx"]}:  # one file where the model serves its own weights
        set_metadata(registry.WEIGHTS / file, card)
    entry |= {
        "sha256": registry.sha256(registry.WEIGHTS / entry["file"]),
        "onnx_sha256": registry.sha256(registry.WEIGHTS / entry["onnx"]),
        "classes": list(card.classes),
        "expressive_threshold": card.expressive_threshold,
    }
    registry.MANIFEST.write_text(json.dumps(registry.shipped() | {name: entry}, indent=2) + "\n")
    registry.forget_verified()
    return entry
