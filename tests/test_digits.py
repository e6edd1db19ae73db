"""The digits job: a smoke training run on a small synthetic MNIST-layout file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from service.core.layout import read_model_card
from training.digit_outliers import KINDS, outliers
from training.digits import LABELS, train
from training.options import TrainOptions


def test_smoke_training_exports_a_working_model(fake_mnist: Path, tmp_path: Path) -> None:
    output = tmp_path / "models"
    version_dir = train(
        TrainOptions(data=fake_mnist, output=output, epochs=1, batch_size=32, limit=200)
    )

    assert version_dir == output / "digits" / "1"
    assert (version_dir / "assets" / "labels.txt").read_text().splitlines() == LABELS
    card = read_model_card(version_dir)
    assert card["metrics"]["test_examples"] == 64
    assert 0.0 <= card["metrics"]["test_accuracy"] <= 1.0
    assert card["data"]["limited_to"] == 200
    serving = card["signatures"]["serving_default"]
    assert serving["inputs"]["image"] == {"dtype": "float32", "shape": [None, 28, 28, 1]}
    calibration = card["metrics"]["calibration"]
    assert 0.05 <= calibration["temperature"] <= 20
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"] + 1e-9
    assert {"test_ece_before", "test_ece_after", "test_nll_before", "test_nll_after"} <= set(
        calibration
    )
    uncertainty = card["metrics"]["uncertainty"]
    assert set(uncertainty["outliers_flagged_uncertain"]) == {kind.__name__ for kind in KINDS}
    assert 0.0 <= uncertainty["test_digits_flagged_uncertain"] <= 1.0
    assert card["hyperparameters"]["outlier_exposure"]["share"] > 0
    for plot in ("training_curves.png", "confusion_matrix.png", "reliability.png"):
        assert (version_dir / "assets.extra" / plot).stat().st_size > 1000

    loaded = tf.saved_model.load(str(version_dir))
    probabilities = loaded.signatures["serving_default"](image=np.zeros((3, 28, 28, 1), np.float32))
    assert probabilities["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(probabilities["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_outliers_are_seeded_mnist_format_pictures_of_every_kind() -> None:
    digits = np.zeros((5, 28, 28), np.uint8)
    digits[:, 6:22, 12:16] = 255  # a "1"
    made = outliers(2 * len(KINDS), digits, seed=3)
    assert made.shape == (2 * len(KINDS), 28, 28) and made.dtype == np.uint8
    np.testing.assert_array_equal(made, outliers(2 * len(KINDS), digits, seed=3))
    assert not np.array_equal(made, outliers(2 * len(KINDS), digits, seed=4))
    two = made[KINDS.index(next(k for k in KINDS if k.__name__ == "two_digits"))]
    assert two[:, :14].any() and two[:, 14:].any()  # a digit in each half
