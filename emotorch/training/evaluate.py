"""Evaluation: metrics as plain data, against labels or the FER+ majority and its votes (no PyTorch)."""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from emotorch.choices import CLASSES
from emotorch.errors import DataError
from emotorch.runtime.classifier import Classifier
from emotorch.training.data import VOTE_NAMES, FaceSet, load_dataset


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017);
    ``labels`` are class indices (N,) or target distributions (N, K) such as crowd votes."""
    # PyTorch's LBFGS: packaging fits temperatures; evaluating needs no PyTorch (the lean install)
    import torch
    from torch.nn import functional as F

    z, y = torch.from_numpy(logits).double(), torch.from_numpy(labels)
    y = y.double() if y.is_floating_point() else y
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Expected calibration error (equal-width confidence bins) and negative log-likelihood."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
    return {"ece": float(ece), "nll": float(nll)}


def compute_metrics(labels: np.ndarray, preds: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict:
    """Accuracy, macro-F1 (over classes present in ``labels``), per-class P/R/F1 and confusion."""
    k = len(classes)
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    present = support > 0
    per_class = {
        c: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
        if present[i]
    }
    return {
        "n": len(labels),
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def pick_split(names: list[str], wanted: str | None) -> str:
    """The split to evaluate: the one asked for, else val, test, then whatever there is."""
    if wanted is not None:
        return wanted
    for name in ("val", "test", "all"):
        if name in names:
            return name
    return names[-1]


def vote_distribution(votes: np.ndarray, classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """The share of each face's emotion votes (every vote, single ones included) per class of ``classes``."""
    v = votes[:, [VOTE_NAMES.index(c) for c in classes]].astype(np.float64)
    return v / np.maximum(v.sum(1, keepdims=True), 1)


def vote_fit(probs: np.ndarray, votes: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, float]:
    """How far predicted probabilities are from what the crowd said: mean KL(votes || predicted), in nats."""
    target = vote_distribution(votes, classes)
    q = np.clip(probs.astype(np.float64), 1e-12, None)
    ratio = np.divide(target, q, out=np.ones_like(target), where=target > 0)
    return {"vote_kl": float((target * np.log(ratio)).sum(1).mean())}


def scorable(faces: FaceSet, classes: list[str] | tuple[str, ...]) -> tuple[FaceSet, dict[str, int]]:
    """The faces a model telling ``classes`` can be scored on, relabelled in its class order, and how many
    were left out and why: FER+ faces without a majority label, and faces of a class the model lacks
    (contempt, for a FER2013 model)."""
    kept, left_out, _ = _scorable(faces, classes)
    return kept, left_out


def _scorable(faces: FaceSet, classes: list[str] | tuple[str, ...]) -> tuple[FaceSet, dict[str, int], np.ndarray]:
    """:func:`scorable`, and the index of the kept faces in ``faces``."""
    classes = list(classes)
    lookup = np.asarray([classes.index(c) if c in classes else -1 for c in faces.classes], np.int64)
    relabelled = np.where(faces.labels >= 0, lookup[np.maximum(faces.labels, 0)], -1)
    left_out = {"no_majority": int((faces.labels < 0).sum())}
    left_out |= {c: int((faces.labels == i).sum()) for i, c in enumerate(faces.classes) if lookup[i] < 0}
    index = np.flatnonzero(relabelled >= 0)
    kept = faces.subset(index)
    kept.labels, kept.classes = relabelled[index], tuple(classes)
    return kept, {k: n for k, n in left_out.items() if n}, index


def restrict(probs: np.ndarray, classes: list[str] | tuple[str, ...], present: tuple[str, ...]) -> np.ndarray:
    """Probabilities with the classes the data cannot hold (contempt, on FER2013) set to 0 and the rest
    renormalised, so that the answer is always a class the data could be right about."""
    mask = np.asarray([c in present for c in classes], np.float64)
    p = probs * mask
    return p / np.maximum(p.sum(1, keepdims=True), 1e-12)


def score(probs: np.ndarray, faces: FaceSet) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class metrics, confusion, ECE and NLL of ``probs`` on scorable ``faces``,
    plus the fit to the crowd's votes where the faces have them."""
    metrics = compute_metrics(faces.labels, probs.argmax(1), faces.classes) | calibration(probs, faces.labels)
    if faces.votes is not None:
        metrics |= vote_fit(probs, faces.votes, faces.classes)
    return metrics


def evaluate(
    model: Classifier,
    faces: FaceSet,
    *,
    tta: bool | None = None,
    progress: bool = False,
    probs: np.ndarray | None = None,
) -> tuple[dict, np.ndarray, FaceSet]:
    """Metrics of ``model`` on labelled ``faces``, with the probabilities and the faces they describe.

    Model and data classes are matched by name (see :func:`scorable` and :func:`restrict`); with
    FER+ votes the truth is the majority label (the standard FER+ protocol) and the probabilities
    are also compared with the vote distribution. ``tta``: None for the model's own setting.
    ``probs``: the model's probabilities of every one of ``faces`` under that setting, where they
    were already computed (to write them as predictions), so that the model does not run twice.
    """
    if not faces.labeled:
        raise DataError("these faces carry no labels: write predictions instead of metrics")
    scored, left_out, index = _scorable(faces, model.classes)
    if not len(scored):
        raise DataError(f"none of these faces has a label the model {model.source} can tell")
    tta = model.card.tta if tta is None else tta
    if probs is None:
        probs = model.predict_proba(scored.images, tta=tta, progress="evaluating" if progress else None)
    else:
        probs = probs[index]
    probs = restrict(probs, scored.classes, faces.classes)
    metrics = score(probs, scored)
    metrics |= {"left_out": left_out, "temperature": model.card.temperature, "tta": tta}
    return metrics, probs, scored


def write_predictions(path: Path, faces: FaceSet, probs: np.ndarray, classes: list[str]) -> None:
    """One row per face: its source, the predicted emotion and every class probability."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "emotion", *classes])
        for src, p in zip(faces.sources, probs, strict=True):
            w.writerow([src, classes[int(p.argmax())], *(f"{v:.5f}" for v in p)])
    os.replace(tmp, path)


def load_split(
    path: str | os.PathLike,
    split: str | None,
    *,
    labels: str | os.PathLike | None = None,
    skip_bad: bool = False,
    skip_unknown: bool = False,
) -> tuple[str, FaceSet]:
    """The named (or default) split of a data set, for evaluation or prediction."""
    ds = load_dataset(path, labels=labels, skip_bad=skip_bad, skip_unknown=skip_unknown)
    name = pick_split(list(ds.splits), split)
    return name, ds.split(name)
