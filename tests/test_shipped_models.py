"""The models committed in models/: they load, have the documented signature and quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from service.core.layout import existing_versions, read_model_card
from tests.conftest import FIXTURES, MODELS_DIR
from training import digits, sentiment, votes


def load(name: str) -> tuple[Any, dict[str, Any], Path]:
    versions = existing_versions(MODELS_DIR / name)
    assert versions, f"no shipped version of {name}"
    version_dir = MODELS_DIR / name / str(versions[-1])
    return tf.saved_model.load(str(version_dir)), read_model_card(version_dir), version_dir


def signature_io(loaded: Any) -> tuple[dict[str, tuple[str, list[int | None]]], list[str]]:
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    described = {name: (spec.dtype.name, spec.shape.as_list()) for name, spec in inputs.items()}
    return described, sorted(signature.structured_outputs)


@pytest.mark.parametrize("name", ["digits", "votes", "sentiment"])
def test_only_the_newest_version_is_shipped_with_labels_and_card(name: str) -> None:
    assert len(existing_versions(MODELS_DIR / name)) == 1
    _, card, version_dir = load(name)
    assert card["name"] == name
    labels = (version_dir / "assets" / "labels.txt").read_text().splitlines()
    assert labels == card["labels"]
    assert card["data"]["limited_to"] is None
    for plot in ("training_curves.png", "confusion_matrix.png"):
        assert (version_dir / "assets.extra" / plot).is_file()


def test_digits_signature_and_test_accuracy() -> None:
    loaded, card, _ = load("digits")
    assert signature_io(loaded) == ({"image": ("float32", [None, 28, 28, 1])}, ["probabilities"])
    assert card["metrics"]["test_examples"] == 10_000
    assert card["metrics"]["test_accuracy"] >= digits.TARGET_ACCURACY


def test_digits_classifies_real_mnist_pngs() -> None:
    loaded, _, _ = load("digits")
    pngs = sorted((FIXTURES / "mnist").glob("*.png"))
    assert len(pngs) == 10
    images = np.stack([np.asarray(Image.open(p).convert("L")) for p in pngs])
    expected = [int(p.stem.rsplit("label", 1)[1]) for p in pngs]
    probabilities = loaded.signatures["serving_default"](image=digits.to_model_input(images))
    predicted = probabilities["probabilities"].numpy().argmax(axis=1).tolist()
    assert predicted == expected


def test_votes_signature_cv_accuracy_and_predictions() -> None:
    loaded, card, _ = load("votes")
    assert signature_io(loaded) == ({"votes": ("float32", [None, 16])}, ["probabilities"])
    assert card["metrics"]["cv_rows"] == 435
    assert (card["metrics"]["cv_repeats"], card["metrics"]["cv_folds"]) == (5, 10)
    assert len(card["metrics"]["cv_fold_accuracies"]) == 50
    assert card["metrics"]["cv_accuracy_mean"] >= votes.TARGET_CV_ACCURACY

    x, parties, _ = votes.load_votes(None)
    probabilities = loaded.signatures["serving_default"](votes=x)["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(axis=1) == parties).mean() >= 0.95


def test_sentiment_reads_raw_text_and_meets_its_target() -> None:
    loaded, card, version_dir = load("sentiment")
    assert signature_io(loaded) == ({"text": ("string", [None])}, ["probabilities"])
    assert card["metrics"]["test_examples"] == 25_000
    assert card["metrics"]["test_accuracy"] >= sentiment.TARGET_ACCURACY
    vocabulary = (version_dir / "assets" / "vocabulary.txt").read_text(encoding="utf-8")
    assert len(vocabulary.splitlines()) == sentiment.VOCABULARY_SIZE - 2


def test_sentiment_labels_obvious_reviews() -> None:
    loaded, _, _ = load("sentiment")
    reviews = {
        "This was a wonderful film. Brilliant acting and a moving story, I loved it.": 1,
        "One of the best movies I have seen in years. A masterpiece!": 1,
        "Beautifully shot, superb performances, highly recommended.<br /><br />10/10": 1,
        "Terrible. The worst movie I have ever seen, a complete waste of time.": 0,
        "Boring, predictable and badly acted. I want my money back.": 0,
        "AWFUL script, awful dialogue; I walked out after half an hour.": 0,
    }
    texts = tf.constant(list(reviews))
    probabilities = loaded.signatures["serving_default"](text=texts)["probabilities"].numpy()
    assert probabilities.argmax(axis=1).tolist() == list(reviews.values())
