"""Temperature scaling (training.calibration) on synthetic classifiers whose miscalibration is
known: it finds the temperature that undoes it, lowers the calibration error, and changes no
prediction."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    scaled,
)


def honest_classifier(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities over 10 classes and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(rows, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in probabilities])
    return probabilities, labels


@pytest.mark.parametrize("distortion", [0.4, 2.5], ids=["overconfident", "underconfident"])
def test_the_fitted_temperature_undoes_a_known_distortion(distortion: float) -> None:
    probabilities, labels = honest_classifier(20_000, seed=1)
    distorted = scaled(probabilities, distortion)  # T < 1 sharpens: overconfident
    calibration = fit_temperature(distorted, labels)
    assert calibration.temperature == pytest.approx(1 / distortion, rel=0.08)
    fixed = scaled(distorted, calibration.temperature)
    assert expected_calibration_error(fixed, labels) < 0.02
    assert expected_calibration_error(distorted, labels) > 3 * expected_calibration_error(
        fixed, labels
    )
    assert calibration.nll_after < calibration.nll_before
    assert calibration.nll_after == pytest.approx(negative_log_likelihood(fixed, labels))
    np.testing.assert_array_equal(fixed.argmax(axis=1), distorted.argmax(axis=1))


def test_a_calibrated_classifier_keeps_a_temperature_near_one() -> None:
    probabilities, labels = honest_classifier(20_000, seed=2)
    assert fit_temperature(probabilities, labels).temperature == pytest.approx(1.0, abs=0.06)
    assert expected_calibration_error(probabilities, labels) < 0.02


def test_ece_of_confident_mistakes_is_their_confidence() -> None:
    """Always 90 % sure and always wrong: the gap is 0.9."""
    probabilities = np.full((100, 10), 0.1 / 9)
    probabilities[:, 0] = 0.9
    labels = np.ones(100, dtype=np.int64)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.9)
