"""The votes job: encoding, reading the UCI file, and a smoke training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from service.core.layout import read_model_card
from training.data import DataNotFoundError
from training.options import TrainOptions
from training.votes import (
    FOLDS,
    SHIPPED_DATA,
    VOTE_COLUMNS,
    encode_votes,
    load_votes,
    read_votes,
    train,
)


def test_yes_no_and_missing_votes_are_three_distinct_values() -> None:
    encoded = encode_votes(["y", "n", "?"] * 5 + ["y"])
    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded[:3], [1.0, -1.0, 0.0])


@pytest.mark.parametrize(
    ("votes", "complaint"),
    [(["y"] * 15, "expected 16 votes, got 15"), (["y"] * 15 + ["maybe"], "'maybe'")],
)
def test_bad_votes_are_rejected(votes: list[str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        encode_votes(votes)


def test_shipped_file_keeps_all_435_rows_including_missing_votes() -> None:
    votes, parties, path = load_votes(None)
    assert path == SHIPPED_DATA
    assert votes.shape == (435, len(VOTE_COLUMNS))
    assert np.bincount(parties).tolist() == [267, 168]  # democrats, republicans
    assert (votes == 0).any(axis=1).sum() == 435 - 232  # rows the course dropped are kept


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "votes.data"
    path.write_text("democrat" + ",y" * 16 + "\nwhig" + ",n" * 16 + "\n")
    with pytest.raises(DataNotFoundError, match=r"votes\.data:2: .*'whig'"):
        read_votes(path)


def test_missing_votes_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="house-votes-84 data not found"):
        load_votes(tmp_path / "missing.data")


def test_smoke_training_exports_a_working_model(tmp_path: Path) -> None:
    version_dir = train(TrainOptions(output=tmp_path, epochs=2))

    assert version_dir == tmp_path / "votes" / "1"
    card = read_model_card(version_dir)
    assert card["metrics"]["cv_folds"] == FOLDS
    assert len(card["metrics"]["cv_fold_accuracies"]) == FOLDS
    assert card["metrics"]["cv_rows"] == 435
    assert card["vote_columns"] == VOTE_COLUMNS
    assert card["data"]["sha256"] == (
        "c87c14110a5ba91d4a1e313ec7392824458152bf071fa5f5452340488337936e"
    )
    for plot in ("training_curves.png", "confusion_matrix.png"):
        assert (version_dir / "assets.extra" / plot).stat().st_size > 1000

    loaded = tf.saved_model.load(str(version_dir))
    votes, _, _ = load_votes(None)
    probabilities = loaded.signatures["serving_default"](votes=votes[:5])["probabilities"]
    assert probabilities.shape == (5, 2)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-6)
