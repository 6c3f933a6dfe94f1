"""Shipping models inside the package (maintainers): a run, or an ensemble of runs, becomes an ONNX
file in ``emotorch/weights`` (one graph, also for an ensemble; weights int8 per channel and
float16, from which PyTorch reads them back), plus an int8 file on request, with their sha256 in
the manifest and a temperature fitted on val. What is measured is what ONNX Runtime serves.
:mod:`emotorch.runtime.registry` reads what this writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotorch.errors import CheckpointError
from emotorch.runtime import registry
from emotorch.runtime.card import ModelCard
from emotorch.runtime.classifier import Classifier, softmax
from emotorch.runtime.reading import fit_offsets, fit_threshold, mean_recall
from emotorch.runtime.session import OnnxModel
from emotorch.training import checkpoint
from emotorch.training.data import FaceSet, load_dataset
from emotorch.training.evaluate import (
    calibration,
    compute_metrics,
    fit_temperature,
    restrict,
    scorable,
    score,
    vote_distribution,
)
from emotorch.training.export import (
    calibration_sample,
    export_onnx,
    quantize_onnx,
    read_weights,
    set_metadata,
    shipped_precision,
)
from emotorch.training.loading import torch_classifier
from emotorch.training.models.expressive import WithExpressiveHead, pooled
from emotorch.training.train import precise_batchnorm

PREPROCESSING = ("classes", "input_size", "mean", "std")  # the card fields ensemble members must share


def load_run(run: str | Path) -> dict[str, Any]:
    """A run's best checkpoint (a run directory or checkpoint file), or a shipped model's weights and card
    as one, by its name: to ship a model again (with an expressive head, say) without its runs."""
    if str(run) in registry.shipped() and not Path(run).exists():
        state, meta = read_weights(registry.shipped_path(str(run)))
        return {"format": checkpoint.FORMAT, "model": state, "meta": meta, "history": []}
    return checkpoint.load(run)


def combine(runs: list[str | Path]) -> dict[str, Any]:
    """One checkpoint from one run, or an ``ensemble`` checkpoint of several (same classes and input)."""
    ckpts = [load_run(run) for run in runs]
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
    expressive: str | Path | None = None,
    blend: float = 0.7,
    offset_scale: float = 0.0,
    crowd_weight: float = 0.1,
) -> dict[str, Any]:
    """Ship a run's best checkpoint (or an ensemble of several runs) as ``name``: its weights rounded to
    int8 per channel (float16 for batch norm and biases) in ``name.onnx``, and with ``int8`` also
    ``name-int8.onnx`` (weights and activations int8, calibrated on training faces), which the
    model then serves. What it serves is what the val metrics and the temperature (fitted on val:
    to the crowd's votes where the data has them) describe; on single labels (FER2013's) the expressive
    threshold is fitted on val too (:func:`emotorch.runtime.reading.fit_threshold`). With ``precise_bn`` the batch-norm
    statistics are first recomputed on the clean training faces. With ``expressive`` (FER2013-labelled
    data) the model gets an expressive head (:func:`fit_expressive_head`, with ``blend``,
    ``offset_scale`` and ``crowd_weight``; ``data``'s training faces teach it the classes FER2013 lacks
    where ``data`` has votes). Returns the manifest entry; ``recipe`` is the command(s) that reproduce the run(s).
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
    if expressive is not None:
        trained, card = fit_expressive_head(
            trained,
            card,
            expressive,
            crowd=train if train.votes is not None else None,
            crowd_weight=crowd_weight,
            blend=blend,
            offset_scale=offset_scale,
        )
        ckpt |= {"model": trained.state_dict(), "meta": card.to_dict()}
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
    probs = softmax(logits, temperature)
    metrics = score(probs, val) | {"left_out": left_out}
    threshold = None  # a model with a head reads its head; FER+ majorities do not name the expression meant
    if not card.expressive_head and not votes:
        threshold = fit_threshold(restrict(probs, val.classes, faces.classes), val.labels, val.classes)
    card = card.replace(
        name=name,
        temperature=temperature,
        expressive_threshold=threshold,
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
    } | ({"expressive_threshold": threshold} if threshold is not None else {})
    registry.MANIFEST.write_text(json.dumps(registry.shipped() | {name: entry}, indent=2) + "\n")
    registry.forget_verified()
    return entry


def pooled_features(module: nn.Module, faces: np.ndarray, card: ModelCard, batch_size: int = 256) -> np.ndarray:
    """The network's pooled features (:func:`emotorch.training.models.expressive.pooled`) of uint8 faces."""
    module.eval()
    with torch.no_grad():
        parts = [
            pooled(module, torch.from_numpy(card.preprocess(faces[i : i + batch_size])))[0].float().numpy()
            for i in range(0, len(faces), batch_size)
        ]
    return np.concatenate(parts)


def fit_expressive_head(
    module: nn.Module,
    card: ModelCard,
    fer2013: str | Path,
    *,
    crowd: FaceSet | None = None,
    crowd_weight: float = 0.1,
    blend: float = 0.7,
    offset_scale: float = 0.0,
    weight_decay: float = 0.01,
) -> tuple[WithExpressiveHead, ModelCard]:
    """``module`` with an expressive head, and its card. The head is a linear layer on the frozen network's
    pooled features, fitted to the FER2013 labels of ``fer2013``'s training faces (the expression a face
    was meant to show) by L-BFGS on class-balanced cross-entropy with an L2 penalty on standardised
    features (deterministic). The model's classes that FER2013 lacks (contempt) are learned from the
    ``crowd`` faces (FER+'s training split) whose majority names them, each such class weighted
    ``crowd_weight`` times a balanced class (few faces, some of them only half contempt). Its probabilities
    are blended with the network's by ``blend``, and per-class offsets fitted on the val faces for mean
    recall (:func:`emotorch.runtime.reading.fit_offsets`, scaled by ``offset_scale``) are added to their log.
    The network and its logits stay as they were; a model that has a head gets a new one."""
    if isinstance(module, WithExpressiveHead):  # a new head replaces the old one
        module, card = module.base, card.base
    faces = load_dataset(fer2013, progress=False)
    train, val = faces.split("train"), faces.split("val")
    if train.votes is not None or any(c not in card.classes for c in faces.classes):
        raise ValueError(f"{fer2013}: an expressive head is fitted on FER2013's single labels over the model's classes")
    to_model = np.asarray([card.classes.index(c) for c in faces.classes])
    images, targets = train.images, to_model[train.labels]
    lacking = [card.classes.index(c) for c in card.classes if c not in faces.classes]
    crowd_faces: dict[str, int] = {}
    if crowd is not None and lacking:
        majorities, _ = scorable(crowd, card.classes)  # relabelled in the model's class order
        named = np.isin(majorities.labels, lacking)
        images = np.concatenate([images, majorities.images[named]])
        targets = np.r_[targets, majorities.labels[named]]
        crowd_faces = {card.classes[c]: int((majorities.labels == c).sum()) for c in lacking}
    x = pooled_features(module, images, card)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    features = torch.from_numpy((x - mu) / sd).double()
    labels = torch.from_numpy(targets)
    counts = np.bincount(targets, minlength=len(card.classes))
    balanced = np.where(counts > 0, len(train) / (len(faces.classes) * np.maximum(counts, 1)), 0.0)
    balanced[lacking] *= crowd_weight
    weights = torch.from_numpy(balanced)
    torch.manual_seed(0)
    linear = nn.Linear(x.shape[1], len(card.classes)).double()
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = nn.functional.cross_entropy(linear(features), labels, weight=weights)
        value = value + weight_decay * linear.weight.pow(2).sum()
        value.backward()
        return value

    opt.step(loss)
    model = WithExpressiveHead(module, len(card.classes), blend).eval()
    with torch.no_grad():  # the standardisation folded into the layer: features in, as the network gives them
        w = linear.weight / torch.from_numpy(sd).double()
        model.expressive.weight.copy_(w.float())
        model.expressive.bias.copy_((linear.bias - w @ torch.from_numpy(mu).double()).float())
    head_card = card.replace(
        architecture="expressive",
        options={"base": {"model": card.architecture, "model_options": dict(card.options)}, "blend": blend},
        expressive_threshold=None,
        parameters=sum(p.numel() for p in model.parameters()),
    )
    scores = torch_classifier(model, head_card, "expressive head").predict_outputs(val.images)["expressive"]
    val_labels = to_model[val.labels]
    offsets = np.zeros(len(card.classes))
    if offset_scale:
        offsets = offset_scale * fit_offsets(scores, val_labels, card.classes.index("neutral"))
        model.offsets.copy_(torch.from_numpy(offsets).float())
    fitted = {
        "data": str(fer2013),
        "train_faces": len(train),
        "crowd_faces": crowd_faces,
        "crowd_weight": crowd_weight,
        "weight_decay": weight_decay,
        "blend": blend,
        "offsets": [round(float(v), 3) for v in offsets],
        "offset_scale": offset_scale,
        "val_mean_recall": mean_recall(val_labels, (scores + offsets).argmax(1)),
    }
    return model, head_card.replace(expressive_head_fit=fitted)
