"""PNG plots written next to a model card: training curves and confusion matrices."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# The object-oriented Figure API renders straight to files, with no pyplot state and no display.
from matplotlib.figure import Figure

History = Mapping[str, Sequence[float]]


def plot_training_curves(history: History | Sequence[History], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, training vs validation, side by side; given several
    histories (an ensemble's members), one pair of lines per member in the same panels."""
    histories = [history] if isinstance(history, Mapping) else list(history)
    metrics = [m for m in ("loss", "accuracy") if m in histories[0]]
    fig = Figure(figsize=(5.5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for number, member in enumerate(histories, start=1):
            name = f"member {number} " if len(histories) > 1 else ""
            epochs = np.arange(1, len(member[metric]) + 1)
            line = ax.plot(epochs, member[metric], marker="o", label=f"{name}training")[0]
            if f"val_{metric}" in member:
                # One colour per member when there are several: solid training, dashed validation.
                style = {"color": line.get_color(), "linestyle": "--"} if name else {}
                ax.plot(
                    epochs,
                    member[f"val_{metric}"],
                    marker="o",
                    label=f"{name}validation",
                    **style,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts[true, predicted] as an int matrix."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (true.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def plot_confusion_matrix(
    counts: np.ndarray, labels: Sequence[str], path: Path, title: str
) -> None:
    """A confusion matrix with counts in every cell; off-diagonal errors stand out in colour."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    shown = np.log1p(counts)  # log scale so a few errors are visible beside thousands correct
    ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 10 else 0)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = shown.max() / 2
    for (row, col), value in np.ndenumerate(counts):
        colour = "white" if shown[row, col] > threshold else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=colour, fontsize=8)
    # Wrapped to the figure's width, so a long title fits above a small (2x2) matrix.
    wrapped = "\n".join(textwrap.fill(line, width=int(size * 9)) for line in title.splitlines())
    ax.set_title(wrapped, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
