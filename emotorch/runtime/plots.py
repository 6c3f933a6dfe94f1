"""Matplotlib figures drawn from evaluation data: curves, confusion matrix, a grid of faces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError:  # the lean install: plotting is the `plots` extra
    from emotorch.errors import MissingExtra

    raise MissingExtra('plots need matplotlib, which this install lacks: pip install "emotorch[plots]"') from None

matplotlib.use("Agg")  # files and TensorBoard only: never needs a display
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure


def confusion_matrix(cm: list[list[int]], classes: list[str], title: str = "Confusion matrix") -> Figure:
    """Row-normalised confusion matrix (recall per true class) with raw counts in each cell."""
    counts = np.asarray(cm)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def prediction_grid(
    images: np.ndarray, probs: np.ndarray, labels: np.ndarray | None, classes: list[str], n: int = 36, seed: int = 0
) -> Figure:
    """A grid of faces titled "predicted (p) / true": green when right, red when wrong."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx, strict=False):
        pred = int(probs[i].argmax())
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        title = f"{classes[pred]} ({probs[i, pred]:.2f})"
        color = "black"
        if labels is not None and labels[i] >= 0:
            title += f"\ntrue: {classes[labels[i]]}"
            color = "green" if labels[i] == pred else "red"
        ax.set_title(title, fontsize=7, color=color)
    fig.tight_layout()
    return fig


def training_curves(history: list[dict[str, Any]]) -> Figure:
    """Loss and accuracy per epoch, train and val, from a run's training log."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("val", "--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, marker=".", label=split)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in history], style, marker=".", label=split)
    if history and "val_macro_f1" in history[0]:
        ax_acc.plot(epochs, [h["val_macro_f1"] for h in history], ":", marker=".", label="val macro-F1")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def legend_above(fig: Figure, ax, strip_inches: float = 0.3) -> None:
    """One legend for the whole figure, in a strip of its own just above the panels, so it covers no curve."""
    handles, labels = ax.get_legend_handles_labels()
    top = 1 - strip_inches / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, top))
    if handles:  # standing on the panels' top edge: no gap between the legend and what it names
        fig.legend(
            handles,
            labels,
            ncol=len(labels),
            fontsize=8,
            loc="lower center",
            bbox_to_anchor=(0.5, top),
            frameon=False,
            borderaxespad=0.0,
            handlelength=1.5,
            columnspacing=1.2,
        )


def save(fig: Figure, path: str | Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
