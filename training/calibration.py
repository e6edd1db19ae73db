"""Temperature scaling (Guo et al., 2017): one number T that divides a classifier's logits, fitted
on held-out data to minimise the negative log-likelihood. It changes no prediction (the arg-max
stays) and makes the confidence honest: answers given at 90 % are right about 90 % of the time.
Measured by the expected calibration error (ECE): the mean gap between confidence and accuracy
over confidence bins, weighted by how many answers fall in each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ECE_BINS = 15
_EPSILON = 1e-12  # probabilities of exactly 0 have no log


@dataclass(frozen=True)
class Calibration:
    temperature: float
    nll_before: float
    nll_after: float


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (which softmax ignores)."""
    logits: np.ndarray = np.log(np.maximum(probabilities.astype(np.float64), _EPSILON))
    return logits


def scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T)."""
    logits = logits_of(probabilities) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
    return float(-np.log(np.maximum(picked, _EPSILON)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
    """The T in [0.05, 20] with the least NLL on (`probabilities`, `labels`): a coarse grid on
    log T, then golden-section search around its best point (the NLL is convex in 1/T)."""

    def nll(log_t: float) -> float:
        return negative_log_likelihood(scaled(probabilities, float(np.exp(log_t))), labels)

    grid = np.linspace(np.log(0.05), np.log(20.0), 61)
    best = int(np.argmin([nll(x) for x in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    temperature = float(np.exp((low + high) / 2))
    before = negative_log_likelihood(probabilities, labels)
    return Calibration(temperature, before, nll(float(np.log(temperature))))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    confidence, correct = _confidence_and_correct(probabilities, labels)
    which = _bin_of(confidence, bins)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(error)


def _confidence_and_correct(
    probabilities: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    return confidence, correct


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin of `bins` equal ones over [0, 1] (1.0 in the last)."""
    which: np.ndarray = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    return which


def plot_reliability(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray, path: Path, title: str
) -> None:
    """Accuracy against confidence per bin, before and after scaling (the diagonal is honest);
    the low-confidence bins are where the difference shows, so the x axis starts at the lowest
    bin used."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for name, probabilities in (("before", before), ("after", after)):
        confidence, correct = _confidence_and_correct(probabilities, labels)
        which = _bin_of(confidence, ECE_BINS)
        used = [b for b in range(ECE_BINS) if (which == b).sum() >= 5]
        ece = expected_calibration_error(probabilities, labels)
        ax.plot(
            [confidence[which == b].mean() for b in used],
            [correct[which == b].mean() for b in used],
            marker="o",
            label=f"{name} scaling (ECE {ece:.4f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    ax.set_xlim(edges[0], 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (bins of 1/15, at least 5 answers each)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
