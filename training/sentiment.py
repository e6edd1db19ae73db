"""`sentiment`: an LSTM that reads raw movie-review text, trained on IMDB (Maas et al., 2011).

Serving signature: `text` tf.string [batch] (raw review text, any case, HTML line breaks and
punctuation allowed) -> `probabilities` float32 [batch, 2] for (negative, positive).
The text vectorization (standardization, whitespace split, vocabulary lookup, truncation and
padding to SEQUENCE_LENGTH tokens) is part of the graph and its vocabulary ships in assets/, so
training and serving cannot disagree and any TF Serving client can send plain text.
"""

from __future__ import annotations

import csv
import gzip
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data import DataNotFoundError, keras_download, locate_data
from training.model_card import data_provenance, provenance
from training.options import TrainOptions, keras_verbosity

# The LSTM's masked steps come out as zeros, so max pooling may drop the mask on purpose;
# Keras warns about that at every call of the layer.
warnings.filterwarnings(
    "ignore", message=r"Layer 'global_max_pooling1d(_\d+)?' .* does not support masking"
)

NAME = "sentiment"
LABELS = ["negative", "positive"]
IMDB_FILE = "imdb.csv.gz"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SOURCE = "Large Movie Review Dataset v1.0 (Maas et al., ACL 2011), " + IMDB_URL
VOCABULARY_SIZE = 20_000  # including the padding and out-of-vocabulary tokens
SEQUENCE_LENGTH = 600  # tokens kept per review: all of ~90 % of reviews (median ~230)
DEFAULT_EPOCHS = 6  # an upper bound: early stopping on validation accuracy ends sooner
# The ensemble's members, by kind (see build_model), each from its own seed; the graph averages
# their outputs. "words" reads word embeddings; "pairs" also each word's pair with the word
# before it. Alone, each kind reaches 87.7-88.7 % on the test reviews; they err on different
# reviews, so the four together reach 90.0 % (docs/models.md).
MEMBERS = ("words", "words", "pairs", "pairs")
ENSEMBLE_SIZE = len(MEMBERS)
PAIR_BUCKETS = 65_521  # hashed word pairs (a prime): each pair of word ids falls in one
PAIR_DIMENSIONS = 64
WORD_DROPOUT = 0.2  # share of words hidden (made out-of-vocabulary) in each training pass
DEFAULT_BATCH_SIZE = 64
VALIDATION_SIZE = 2500
TARGET_ACCURACY = 0.90


@dataclass
class Reviews:
    train_texts: list[str]
    train_labels: np.ndarray  # int64 [n]: 0 negative, 1 positive
    test_texts: list[str]
    test_labels: np.ndarray
    path: Path


def standardize(text: Any) -> Any:
    """Lower-case, drop HTML tags and apostrophes, turn everything but letters/digits into spaces.

    Unicode-aware (RE2 classes), so 'Émile' stays one word; runs inside the serving graph.
    """
    import tensorflow as tf

    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<[^>]*>", " ")  # <br /> and any other tag
    text = tf.strings.regex_replace(text, r"['\x{2019}]", "")  # "don't" -> "dont", one token
    return tf.strings.regex_replace(text, r"[^\p{L}\p{N}]+", " ")


def load_reviews(data: Path | None, allow_download: bool) -> Reviews:
    """IMDB as raw text from a CSV (review,sentiment,split) or an aclImdb/ folder: --data, the
    data folder's imdb.csv.gz, or the original archive downloaded (and unpacked) by Keras."""
    path = locate_data(
        data,
        IMDB_FILE,
        what="IMDB reviews",
        download=_download_imdb,
        url=IMDB_URL,
        allow_download=allow_download,
    )
    splits = _read_acl_imdb(path) if path.is_dir() else _read_csv(path)
    for split in ("train", "test"):
        if not splits[split]:
            raise DataNotFoundError(f"{path}: no '{split}' reviews found")
    train_texts, train_labels = _unzip(splits["train"])
    test_texts, test_labels = _unzip(splits["test"])
    return Reviews(train_texts, train_labels, test_texts, test_labels, path)


def _unzip(rows: list[tuple[str, int]]) -> tuple[list[str], np.ndarray]:
    return [text for text, _ in rows], np.array([label for _, label in rows], dtype=np.int64)


def _sample(
    texts: list[str], labels: np.ndarray, limit: int | None, seed: int
) -> tuple[list[str], np.ndarray]:
    """The reviews in a seeded random order, cut to `limit`: the files are sorted by label,
    so a plain prefix would hold one class only."""
    order = np.random.default_rng(seed).permutation(len(texts))[:limit]
    return [texts[i] for i in order], labels[order]


def _read_csv(path: Path) -> dict[str, list[tuple[str, int]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"review", "sentiment", "split"} - set(reader.fieldnames or [])
            if missing:
                raise DataNotFoundError(
                    f"{path}: CSV needs columns review,sentiment,split; missing {sorted(missing)}"
                )
            for line_no, row in enumerate(reader, start=2):
                if row["sentiment"] not in LABELS or row["split"] not in splits:
                    raise DataNotFoundError(
                        f"{path}:{line_no}: sentiment must be negative/positive and split "
                        f"train/test, got {row['sentiment']!r}/{row['split']!r}"
                    )
                splits[row["split"]].append((row["review"], LABELS.index(row["sentiment"])))
    except DataNotFoundError:
        raise  # already says what is wrong (and is an OSError, caught just below)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataNotFoundError(f"{path} is not a readable review CSV: {exc}") from exc
    return splits


def _read_acl_imdb(root: Path) -> dict[str, list[tuple[str, int]]]:
    """The original tree: aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt."""
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    return {
        split: [
            (file.read_text(encoding="utf-8"), LABELS.index(label))
            for folder, label in (("neg", "negative"), ("pos", "positive"))
            for file in sorted((root / split / folder).glob("*.txt"))
        ]
        for split in ("train", "test")
    }


def _download_imdb() -> Path:
    folder = keras_download("aclImdb_v1.tar.gz", IMDB_URL, extract=True)
    if not folder.is_dir():
        raise DataNotFoundError(f"the download of {IMDB_URL} did not unpack to a folder")
    return folder


def build_vectorizer(vocabulary_file: Path | None = None) -> Any:
    """Raw text -> int token ids [batch, SEQUENCE_LENGTH]; 0 pads, 1 is out-of-vocabulary."""
    from keras import layers

    return layers.TextVectorization(
        max_tokens=VOCABULARY_SIZE,
        standardize=standardize,
        split="whitespace",
        output_mode="int",
        output_sequence_length=SEQUENCE_LENGTH,
        vocabulary=None if vocabulary_file is None else str(vocabulary_file),
        name="vectorizer",
    )


def trim_padding(tokens: Any) -> Any:
    """Token ids [batch, n] cut to the batch's longest review plus one padding column (at most
    SEQUENCE_LENGTH): the LSTM then runs as many steps as the batch needs, not always
    SEQUENCE_LENGTH. The masked steps it skips would not change any output, and the padding
    column kept gives the max over time the same zeros it sees in training batches."""
    import tensorflow as tf

    lengths = tf.reduce_sum(tf.cast(tokens > 0, tf.int32), axis=1)
    longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))  # 0 for an empty batch
    width = tf.minimum(longest + 1, tf.shape(tokens)[1])
    return tokens[:, :width]


def word_pairs(tokens: Any) -> Any:
    """Token ids [batch, n] -> ids of each word's pair with the word before it, hashed into
    1..PAIR_BUCKETS-1 (0 where the word is padding). Plain integer arithmetic on the ids, so
    training and the serving graph hash alike."""
    import tensorflow as tf

    ids = tf.cast(tokens, tf.int64)
    before = tf.pad(ids[:, :-1], [[0, 0], [1, 0]])
    pairs = 1 + (before * VOCABULARY_SIZE + ids) % (PAIR_BUCKETS - 1)
    return tf.cast(tf.where(ids > 0, pairs, 0), tf.int32)


def _mean_over_words() -> Any:
    """A layer: the mean of the LSTM's outputs [batch, n, d] over each review's words (token
    ids [batch, n] > 0), 0 for an empty review (Keras' masked average gives NaN there)."""
    import keras
    import tensorflow as tf

    class MeanOverWords(keras.layers.Layer):  # type: ignore[misc]
        def call(self, inputs: list[Any]) -> Any:
            steps, tokens = inputs
            words = tf.cast(tokens > 0, steps.dtype)[:, :, tf.newaxis]
            count = tf.maximum(tf.reduce_sum(words, axis=1), 1.0)
            return tf.reduce_sum(steps * words, axis=1) / count

        def compute_mask(self, inputs: Any, mask: Any = None) -> None:
            return None  # one vector per review: nothing left to mask

    return MeanOverWords(name="mean_over_words")


def build_model(kind: str = "words") -> Any:
    """Embedding -> bidirectional LSTM over the review's tokens -> max over time -> sigmoid.

    `kind` "pairs" adds an embedding of each word's pair with the one before it (hashed, see
    word_pairs) beside the word's own, and pools the mean over time beside the max: word pairs
    ("not good") are what a bag-of-words model lacks, and reach the LSTM in one step.

    Padding is masked, so a short review is not read as a long run of padding tokens. No
    recurrent dropout, so the LSTM keeps its fast fused kernel where there is one; dropout on
    whole embedding channels and before the output instead, as the model otherwise overfits
    IMDB within three epochs. Takes any number of tokens per review (see trim_padding).
    """
    import keras
    from keras import layers

    if kind not in ("words", "pairs"):
        raise ValueError(f"unknown member kind {kind!r}: words or pairs")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = layers.Embedding(VOCABULARY_SIZE, 128, mask_zero=True)(tokens)
    if kind == "pairs":
        pairs = layers.Lambda(word_pairs, name="word_pairs")(tokens)
        # masked too: Concatenate keeps a step that either input leaves unmasked
        paired = layers.Embedding(PAIR_BUCKETS, PAIR_DIMENSIONS, mask_zero=True)(pairs)
        x = layers.Concatenate()([x, paired])
    x = layers.SpatialDropout1D(0.3)(x)
    # Masked steps come out as zeros, so the max below sees only the review's own tokens
    # (and is 0, not NaN, for an empty text).
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    pooled = layers.GlobalMaxPooling1D()(x)
    if kind == "pairs":
        pooled = layers.Concatenate()([pooled, _mean_over_words()([x, tokens])])
    pooled = layers.Dropout(0.5)(pooled)
    positive = layers.Dense(1, activation="sigmoid", name="positive")(pooled)
    model = keras.Model(tokens, positive, name=f"{NAME}_{kind}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def train(options: TrainOptions) -> Path:
    """Adapt the vocabulary, train the MEMBERS' LSTMs, export the next version, return its
    folder."""
    import keras
    import tensorflow as tf

    from training.export import ExportRequest, export_trained

    reviews = load_reviews(options.data, options.allow_download)
    epochs = options.epochs or DEFAULT_EPOCHS
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    keras.utils.set_random_seed(options.seed)

    texts, labels = _sample(reviews.train_texts, reviews.train_labels, options.limit, options.seed)
    n_val = min(VALIDATION_SIZE, len(texts) // 10)
    val_idx, train_idx = np.arange(n_val), np.arange(n_val, len(texts))

    with tempfile.TemporaryDirectory() as scratch:
        # Adapt on the training reviews only, then rebuild the layer from a vocabulary file:
        # a file-backed lookup table is saved as an asset of the SavedModel.
        adapting = build_vectorizer()
        adapting.adapt(tf.data.Dataset.from_tensor_slices([texts[i] for i in train_idx]).batch(512))
        vocabulary_file = Path(scratch) / "vocabulary.txt"
        special = 2  # '' (padding) and '[UNK]' are added back by the layer
        vocabulary_file.write_text(
            "\n".join(adapting.get_vocabulary()[special:]) + "\n", encoding="utf-8"
        )
        vectorizer = build_vectorizer(vocabulary_file)

        def vectorize(indices: np.ndarray) -> np.ndarray:
            batches = [
                vectorizer(tf.constant([texts[i] for i in indices[s : s + 1024]])).numpy()
                for s in range(0, len(indices), 1024)
            ]
            return np.concatenate(batches)

        train_tokens, val_tokens = vectorize(train_idx), vectorize(val_idx)
        members, histories = [], []
        for member, kind in enumerate(MEMBERS):
            seed = options.seed + member
            keras.utils.set_random_seed(seed)
            model = build_model(kind)
            history = model.fit(
                _length_batches(train_tokens, labels[train_idx], batch_size, seed),
                validation_data=_length_batches(val_tokens, labels[val_idx], 256),
                epochs=epochs,
                verbose=keras_verbosity(),
                callbacks=[
                    # The validation loss rises from overconfidence while accuracy still
                    # improves, so both callbacks follow accuracy: a smaller step when it
                    # stalls, a stop after two epochs without improvement, and the best
                    # epoch's weights kept.
                    keras.callbacks.ReduceLROnPlateau(
                        monitor="val_accuracy", factor=0.3, patience=0, verbose=1
                    ),
                    keras.callbacks.EarlyStopping(
                        monitor="val_accuracy", patience=2, restore_best_weights=True
                    ),
                ],
            ).history
            members.append(model)
            histories.append(history)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(text: tf.Tensor) -> dict[str, tf.Tensor]:
            tokens = trim_padding(vectorizer(text))
            positive = tf.add_n([m(tokens, training=False) for m in members]) / len(members)
            return {"probabilities": tf.concat([1.0 - positive, positive], axis=1)}

        test_texts, test_labels = _sample(
            reviews.test_texts, reviews.test_labels, options.limit, options.seed
        )

        def evaluate(loaded: Any, extra: Path) -> dict[str, Any]:
            metrics = evaluate_sentiment(loaded, test_texts, test_labels, extra)
            # Each member alone on the same test reviews, to show what the averaging adds.
            test_tokens = np.concatenate(
                [
                    vectorizer(tf.constant(test_texts[s : s + 1024])).numpy()
                    for s in range(0, len(test_texts), 1024)
                ]
            )
            metrics["member_test_accuracies"] = [
                _accuracy(m, test_tokens, test_labels) for m in members
            ]
            return metrics

        card = _card(options, reviews.path, epochs, batch_size, histories, len(train_idx))
        request = ExportRequest(
            name=NAME,
            model=[*members, vectorizer],
            serving_fn=serve,
            labels=LABELS,
            card=card,
            evaluate=evaluate,
        )
        return export_trained(request, options, histories, "sentiment: IMDB LSTM")


def _length_batches(
    tokens: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None = None
) -> Any:
    """A keras PyDataset: batches of token ids grouped by review length, each cut like
    trim_padding does, so an LSTM step is rarely spent on padding (reviews run from a few
    words to SEQUENCE_LENGTH tokens).

    With a seed, the reviews are reshuffled every epoch (sorted by length only within chunks
    of 50 batches, and the batches shuffled) and WORD_DROPOUT of their words hidden (id 1,
    out-of-vocabulary), so the model cannot lean on a few memorised words; padding stays
    padding. Without a seed (validation, test), fixed batches of the reviews as they are.
    """
    import keras

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.lengths = (tokens > 0).sum(axis=1)
            self.batches = self._plan()

        def _plan(self) -> list[np.ndarray]:
            if seed is None:
                order = np.argsort(self.lengths, kind="stable")
                return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
            order = self.rng.permutation(len(tokens))
            batches = []
            chunk = batch_size * 50
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches += [part[s : s + batch_size] for s in range(0, len(part), batch_size)]
            self.rng.shuffle(batches)
            return batches

        def __len__(self) -> int:
            return len(self.batches)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self.batches[index]
            width = min(int(self.lengths[rows].max()) + 1, tokens.shape[1])
            batch = tokens[rows, :width]
            if seed is not None:
                hide = (self.rng.random(batch.shape) < WORD_DROPOUT) & (batch > 0)
                batch = np.where(hide, 1, batch)
            return batch.astype(np.int32), labels[rows]

        def on_epoch_end(self) -> None:
            if seed is not None:
                self.batches = self._plan()

    return Batches()


def _accuracy(model: Any, tokens: np.ndarray, labels: np.ndarray) -> float:
    """A member's test accuracy on vectorized reviews, batched like validation."""
    batches = _length_batches(tokens, labels, 256)
    positive = model.predict(batches, verbose=0)[:, 0]
    order = np.concatenate(batches.batches)
    return float(((positive > 0.5) == labels[order]).mean())


def evaluate_sentiment(
    loaded: Any, texts: list[str], labels: np.ndarray, extra: Path
) -> dict[str, Any]:
    """Accuracy of the exported SavedModel on raw test reviews, plus a confusion matrix."""
    from training.evaluation import evaluate_classifier

    signature = loaded.signatures["serving_default"]

    def probabilities(batch: list[str]) -> Any:
        return signature(text=np.array(batch, dtype=object))["probabilities"]

    title = f"sentiment: IMDB test set ({len(labels)} reviews)"
    return evaluate_classifier(probabilities, texts, labels, LABELS, 500, extra, title)


def _card(
    options: TrainOptions,
    data_path: Path,
    epochs: int,
    batch_size: int,
    histories: list[dict[str, list[float]]],
    n_train: int,
) -> dict[str, Any]:
    best = [int(np.argmax(history["val_accuracy"])) for history in histories]
    return {
        "task": "text classification: movie review sentiment (negative/positive)",
        "description": f"The average of {len(histories)} LSTMs, each from its own seed: "
        "embedding 128 -> bidirectional LSTM 64 -> max over time -> sigmoid ('words'), and "
        f"the same with an embedding ({PAIR_DIMENSIONS}) of each word's pair with the word "
        "before it (hashed) beside the word's, pooled by max and mean over time ('pairs'); the "
        "text vectorization is inside the graph.",
        "input": {
            "text": "string [batch]: raw review text (UTF-8). In the graph: lower-cased, HTML "
            "tags and apostrophes removed, non-letters/digits become spaces, split on "
            f"whitespace, first {SEQUENCE_LENGTH} tokens kept, {VOCABULARY_SIZE - 2} word "
            "vocabulary (assets/vocabulary.txt) plus padding and out-of-vocabulary ids; "
            "padding beyond the batch's longest review is cut before the LSTMs run",
        },
        "output": {"probabilities": "float32 [batch, 2]: P(negative), P(positive)"},
        "data": {
            **_data_provenance(data_path),
            "train_examples": n_train,
            "limited_to": options.limit,
        },
        "hyperparameters": {
            "vocabulary_size": VOCABULARY_SIZE,
            "sequence_length": SEQUENCE_LENGTH,
            "ensemble_size": len(histories),
            "members": list(MEMBERS[: len(histories)]),
            "pair_buckets": PAIR_BUCKETS,
            "pair_dimensions": PAIR_DIMENSIONS,
            "max_epochs": epochs,
            "epochs_trained": [len(history["loss"]) for history in histories],
            "best_epoch": [b + 1 for b in best],
            "batch_size": batch_size,
            "batching": "reviews of similar length batched together, padding cut per batch",
            "optimizer": "Adam 1e-3, x0.3 on a val-accuracy plateau, early stopping (patience 2)",
            "word_dropout": WORD_DROPOUT,
            "seeds": [options.seed + member for member in range(len(histories))],
        },
        # Per member and epoch, as drawn in assets.extra/training_curves.png.
        "learning_curves": [
            {key: [round(float(v), 4) for v in values] for key, values in history.items()}
            for history in histories
        ],
        "metrics": {
            "member_validation_accuracies": [
                history["val_accuracy"][b] for history, b in zip(histories, best, strict=True)
            ],
            "target_test_accuracy": TARGET_ACCURACY,
        },
        **provenance(),
    }


def _data_provenance(path: Path) -> dict[str, Any]:
    """A CSV is pinned by its checksum; an aclImdb/ tree is named by its folder."""
    license_ = "research use; cite Maas et al., ACL 2011"
    if path.is_file():
        return data_provenance(path, source=SOURCE, license_=license_)
    return {"source": SOURCE, "license": license_, "folder": str(path)}
