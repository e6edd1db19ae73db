"""The digits job: a smoke training run on a small synthetic MNIST-layout file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from service.core.layout import read_model_card
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
    for plot in ("training_curves.png", "confusion_matrix.png", "reliability.png"):
        assert (version_dir / "assets.extra" / plot).stat().st_size > 1000

    loaded = tf.saved_model.load(str(version_dir))
    probabilities = loaded.signatures["serving_default"](image=np.zeros((3, 28, 28, 1), np.float32))
    assert probabilities["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(probabilities["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
