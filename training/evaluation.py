"""Measuring an exported classifier on a test set: predictions, metrics, confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.plots import confusion_matrix, plot_confusion_matrix


def predicted_classes(
    probabilities_of: Callable[[Any], Any], inputs: Sequence[Any] | np.ndarray, batch_size: int
) -> np.ndarray:
    """Arg-max class of every input, calling `probabilities_of` one batch at a time."""
    from rich.progress import track

    starts = range(0, len(inputs), batch_size)
    return np.concatenate(
        [
            np.asarray(probabilities_of(inputs[start : start + batch_size])).argmax(axis=1)
            for start in track(starts, description="evaluating the exported model")
        ]
    )


def evaluate_classifier(
    probabilities_of: Callable[[Any], Any],
    inputs: Sequence[Any] | np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    batch_size: int,
    extra: Path,
    title: str,
) -> dict[str, Any]:
    """Accuracy, error count, per-class accuracy and confusion matrix of a classifier on a test
    set (predicted a batch at a time, see predicted_classes); the matrix, titled `title`, is
    also drawn to extra/confusion_matrix.png."""
    predicted = predicted_classes(probabilities_of, inputs, batch_size)
    counts = confusion_matrix(labels, predicted, len(label_names))
    accuracy = float((predicted == labels).mean())
    plot = extra / "confusion_matrix.png"
    plot_confusion_matrix(counts, label_names, plot, f"{title}, accuracy {accuracy:.2%}")
    per_class = counts.diagonal() / np.maximum(counts.sum(axis=1), 1)
    return {
        "test_accuracy": accuracy,
        "test_examples": len(labels),
        "test_errors": int((predicted != labels).sum()),
        "per_class_accuracy": {
            name: float(value) for name, value in zip(label_names, per_class, strict=True)
        },
        # As drawn in confusion_matrix.png: counts[true][predicted], in label order.
        "confusion_matrix": {"labels": list(label_names), "counts": counts.tolist()},
    }
