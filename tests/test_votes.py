"""The votes job: encoding, reading the UCI file, the repeated cross-validation's numbers, a
smoke training run, and the task API's refusal of a record without a single yes or no vote
(a real server on the committed model)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from service.core.layout import read_model_card
from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.server import error_message, ok_json, running_server
from training.data import DataNotFoundError
from training.options import TrainOptions
from training.votes import (
    FOLDS,
    SHIPPED_DATA,
    VOTE_COLUMNS,
    CrossValidation,
    encode_votes,
    load_votes,
    read_votes,
    train,
)

PARTY = "/api/v1/party"


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


def test_cross_validation_reports_all_folds_and_each_repeat() -> None:
    folds = [[1.0, 0.9, 0.8], [1.0, 1.0, 0.7]]
    cv = CrossValidation(folds, np.zeros((2, 30), dtype=np.int64))
    metrics = cv.metrics()
    assert metrics["cv_method"] == "repeated stratified 3-fold (2 x 3 fits)"
    assert (metrics["cv_repeats"], metrics["cv_folds"], metrics["cv_rows"]) == (2, 3, 30)
    assert metrics["cv_fold_accuracies"] == [1.0, 0.9, 0.8, 1.0, 1.0, 0.7]
    assert metrics["cv_accuracy_mean"] == pytest.approx(0.9)
    assert metrics["cv_accuracy_std"] == pytest.approx(np.std([1.0, 0.9, 0.8, 1.0, 1.0, 0.7]))
    assert metrics["cv_repeat_means"] == pytest.approx([0.9, 0.9])


def test_smoke_training_exports_a_working_model(tmp_path: Path) -> None:
    version_dir = train(TrainOptions(output=tmp_path, epochs=2, cv_repeats=1))

    assert version_dir == tmp_path / "votes" / "1"
    card = read_model_card(version_dir)
    assert card["metrics"]["cv_folds"] == FOLDS
    assert card["metrics"]["cv_repeats"] == 1
    assert len(card["metrics"]["cv_fold_accuracies"]) == FOLDS
    assert len(card["metrics"]["cv_repeat_means"]) == 1
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


# --- the task API: a record needs at least one yes or no vote ------------------------------


@pytest.fixture(scope="module")
def party(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server with only the committed votes model."""
    repo = tmp_path_factory.mktemp("votes-server")
    shutil.copytree(MODELS_DIR / "votes", repo / "votes")
    settings = Settings(model_base_path=repo, poll_interval_seconds=0)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.mark.parametrize(
    "empty",
    [{}, dict.fromkeys(VOTE_COLUMNS, "?"), {"crime": "?"}],
    ids=["no-bills", "all-not-voting", "one-not-voting"],
)
def test_a_record_without_a_yes_or_no_vote_is_refused(
    party: httpx.Client, empty: dict[str, str]
) -> None:
    """No evidence, no party: the model would answer from wherever its weights put the
    all-zero input (version 1 said "republican 87.7 %")."""
    response = party.post(PARTY, json={"votes": [{"crime": "y"}, empty]})
    message = error_message(response, 400)
    assert "votes[1]" in message and "at least one 'y' or 'n'" in message, message
    assert "votes[0]" not in message


def test_one_vote_is_enough_for_an_answer(party: httpx.Client) -> None:
    body = ok_json(party.post(PARTY, json={"votes": [{"physician-fee-freeze": "y"}]}))
    (prediction,) = body["predictions"]
    assert prediction["party"] in {"democrat", "republican"}
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_the_raw_model_still_answers_an_all_zero_row(party: httpx.Client) -> None:
    """TF Serving and V2 calls are raw model calls: the refusal is the task API's."""
    body = ok_json(party.post("/v1/models/votes:predict", json={"instances": [[0.0] * 16]}))
    assert len(body["predictions"][0]) == 2
