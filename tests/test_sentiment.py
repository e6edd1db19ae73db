"""The sentiment job: in-graph text preprocessing, data loading, a smoke training run."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from service.core.layout import read_model_card
from training.data import DataNotFoundError
from training.options import TrainOptions
from training.sentiment import (
    ENSEMBLE_SIZE,
    LABELS,
    MEMBERS,
    PAIR_BUCKETS,
    SEQUENCE_LENGTH,
    build_model,
    build_vectorizer,
    load_reviews,
    standardize,
    train,
    trim_padding,
    word_pairs,
)

POSITIVE_WORDS = ["wonderful", "brilliant", "moving", "superb", "delightful"]
NEGATIVE_WORDS = ["awful", "boring", "dreadful", "waste", "terrible"]


def write_reviews_csv(path: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """Reviews whose sentiment is carried by a few words, sorted by label like the real file."""
    rng = np.random.default_rng(0)
    filler = ["the", "film", "plot", "actor", "scene", "story", "director", "camera", "music"]
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        for label in LABELS:
            cue = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
            for _ in range(n // 2):
                words = list(rng.choice(filler, 20)) + list(rng.choice(cue, 3))
                rng.shuffle(words)
                rows.append(
                    {
                        "review": " ".join(words) + ". <br /><br />",
                        "sentiment": label,
                        "split": split,
                    }
                )
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["review", "sentiment", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def standardized(text: str) -> str:
    return standardize(tf.constant([text])).numpy()[0].decode("utf-8").strip()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A GREAT Movie", "a great movie"),
        ("Great!!! Really,great...", "great really great"),
        ("line one.<br /><br />line two<br/>", "line one line two"),
        ("<i>italic</i> text", "italic text"),
        ("don't won\u2019t", "dont wont"),
        ("ÉMILE était LÀ \u2013 naïve café", "émile était là naïve café"),
        ("", ""),
        ("   \t\n ", ""),
        ("movie2 is 10/10", "movie2 is 10 10"),
    ],
)
def test_standardize_in_graph(raw: str, expected: str) -> None:
    assert " ".join(standardized(raw).split()) == expected


def test_vectorizer_pads_truncates_and_marks_unknown_words(tmp_path: Path) -> None:
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("great\nmovie\n")
    vectorize = build_vectorizer(vocabulary)
    ids = vectorize(tf.constant(["Great movie, GREAT cast", "", "word " * 10_000])).numpy()
    assert ids.shape == (3, SEQUENCE_LENGTH)
    assert ids[0, :4].tolist() == [2, 3, 2, 1]  # 0 pads, 1 is out-of-vocabulary
    assert not ids[0, 4:].any()
    assert not ids[1].any()
    assert (ids[2] == 1).all()  # 10,000 words cut to SEQUENCE_LENGTH


def test_trim_padding_keeps_the_longest_review_and_one_padding_column() -> None:
    ids = np.zeros((3, SEQUENCE_LENGTH), dtype=np.int32)
    ids[0, :5] = 7
    ids[1, :2] = 1  # out-of-vocabulary words are words, not padding
    assert trim_padding(tf.constant(ids)).numpy().tolist() == ids[:, :6].tolist()
    ids[2] = 3  # a review as long as SEQUENCE_LENGTH: nothing to cut
    assert trim_padding(tf.constant(ids)).shape == (3, SEQUENCE_LENGTH)
    assert trim_padding(tf.zeros((0, SEQUENCE_LENGTH), tf.int32)).shape == (0, 1)


@pytest.mark.parametrize("kind", ["words", "pairs"])
def test_cutting_padding_does_not_change_the_model_output(kind: str) -> None:
    """Served batches are cut to their longest review (plus one padding column): the same
    probabilities as with all SEQUENCE_LENGTH columns, as the padding is masked."""
    ids = np.zeros((3, SEQUENCE_LENGTH), dtype=np.int32)
    rng = np.random.default_rng(0)
    for row, length in enumerate([40, 3, 0]):
        ids[row, :length] = rng.integers(1, 500, length)
    model = build_model(kind)
    full = model(tf.constant(ids), training=False).numpy()
    cut = model(trim_padding(tf.constant(ids)), training=False).numpy()
    np.testing.assert_allclose(cut, full, atol=1e-6)


def test_word_pairs_hash_each_word_with_the_one_before() -> None:
    tokens = tf.constant([[5, 7, 5, 7, 0, 0], [7, 5, 1, 0, 0, 0]], tf.int32)
    pairs = word_pairs(tokens).numpy()
    assert (pairs[tokens.numpy() == 0] == 0).all()  # padding stays padding
    assert ((pairs[tokens.numpy() > 0] >= 1) & (pairs[tokens.numpy() > 0] < PAIR_BUCKETS)).all()
    assert pairs[0, 1] == pairs[0, 3]  # "5 7" twice: one id
    assert pairs[0, 2] == pairs[1, 1]  # "7 5" in both reviews: one id
    assert pairs[0, 1] != pairs[0, 2]  # the order of the words counts
    assert pairs[0, 0] != pairs[0, 2]  # 5 opening a review is not 5 after 7
    with pytest.raises(ValueError, match="unknown member kind"):
        build_model("chars")


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.csv.gz"])
def test_reads_review_csv(tmp_path: Path, name: str) -> None:
    reviews = load_reviews(write_reviews_csv(tmp_path / name, 40, 20), allow_download=False)
    assert len(reviews.train_texts) == 40
    assert len(reviews.test_texts) == 20
    assert np.bincount(reviews.train_labels).tolist() == [20, 20]


def test_reads_acl_imdb_tree(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for folder, text in (("pos", "loved it"), ("neg", "hated it")):
            (tmp_path / "aclImdb" / split / folder).mkdir(parents=True)
            (tmp_path / "aclImdb" / split / folder / "0_7.txt").write_text(text)
    reviews = load_reviews(tmp_path, allow_download=False)
    assert sorted(zip(reviews.train_texts, reviews.train_labels.tolist(), strict=True)) == [
        ("hated it", 0),
        ("loved it", 1),
    ]


def test_csv_with_wrong_columns_or_labels_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("text,label\nhello,1\n")
    with pytest.raises(DataNotFoundError, match=r"^\S+: CSV needs .* missing \['review'"):
        load_reviews(path, allow_download=False)
    path.write_text("review,sentiment,split\nhello,meh,train\n")
    with pytest.raises(DataNotFoundError, match=r"a\.csv:2: .*'meh'"):
        load_reviews(path, allow_download=False)


def test_missing_reviews_give_a_clear_error(no_shared_data: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"IMDB reviews not found(.|\n)*--data PATH"):
        load_reviews(None, allow_download=False)


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("sentiment")
    data = write_reviews_csv(folder / "reviews.csv")
    version_dir = train(TrainOptions(data=data, output=folder / "models", epochs=3))
    return version_dir, tf.saved_model.load(str(version_dir))


def predict(loaded: Any, texts: list[str]) -> np.ndarray:
    signature = loaded.signatures["serving_default"]
    result: np.ndarray = signature(text=tf.constant(texts))["probabilities"].numpy()
    return result


def test_smoke_training_exports_raw_text_model(smoke_model: tuple[Path, Any]) -> None:
    version_dir, loaded = smoke_model
    assert (version_dir / "assets" / "labels.txt").read_text().splitlines() == LABELS
    vocabulary = (version_dir / "assets" / "vocabulary.txt").read_text().split()
    assert set(POSITIVE_WORDS + NEGATIVE_WORDS) <= set(vocabulary)
    card = read_model_card(version_dir)
    assert card["signatures"]["serving_default"]["inputs"] == {
        "text": {"dtype": "string", "shape": [None]}
    }
    assert card["metrics"]["test_examples"] == 100
    assert len(card["metrics"]["member_test_accuracies"]) == ENSEMBLE_SIZE
    assert sum(sum(row) for row in card["metrics"]["confusion_matrix"]["counts"]) == 100
    assert len(card["learning_curves"]) == ENSEMBLE_SIZE
    assert card["hyperparameters"]["members"] == list(MEMBERS)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(card["learning_curves"][0])
    assert (version_dir / "assets.extra" / "training_curves.png").is_file()
    assert (version_dir / "assets.extra" / "confusion_matrix.png").is_file()
    probabilities = predict(loaded, ["a wonderful superb film", "an awful boring waste"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert probabilities[:, 1].tolist() == sorted(probabilities[:, 1].tolist(), reverse=True)


def test_served_model_ignores_case_markup_and_punctuation(smoke_model: tuple[Path, Any]) -> None:
    _, loaded = smoke_model
    variants = [
        "a wonderful film, truly superb",
        "A WONDERFUL film!!! Truly... SUPERB",
        "<p>a wonderful film<br /><br />truly superb</p>",
    ]
    probabilities = predict(loaded, variants)
    np.testing.assert_allclose(probabilities, np.repeat(probabilities[:1], 3, axis=0), atol=1e-6)


def test_served_model_takes_empty_long_and_non_ascii_text(smoke_model: tuple[Path, Any]) -> None:
    _, loaded = smoke_model
    texts = ["", "wonderful " * 50_000, "película maravillosa 素晴らしい 🎬", "\x00\ufffd"]
    probabilities = predict(loaded, texts)
    assert probabilities.shape == (4, 2)
    assert np.isfinite(probabilities).all()
