"""`votes`: party (democrat/republican) from the 16 key votes of the 1984 U.S. House.

Serving signature: `votes` float32 [batch, 16], one value per vote in UCI column order
(VOTE_COLUMNS), encoded yes = +1, no = -1, not voted (`?`) = 0 -> `probabilities` float32
[batch, 2] for (democrat, republican).

A missing vote is kept as information (0, between yes and no) rather than a reason to drop
the row: all 435 members are used, where the course dropped 203 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import DataNotFoundError
from training.model_card import data_provenance, provenance
from training.options import TrainOptions

NAME = "votes"
LABELS = ["democrat", "republican"]
VOTE_COLUMNS = [
    "handicapped-infants",
    "water-project-cost-sharing",
    "adoption-of-the-budget-resolution",
    "physician-fee-freeze",
    "el-salvador-aid",
    "religious-groups-in-schools",
    "anti-satellite-test-ban",
    "aid-to-nicaraguan-contras",
    "mx-missile",
    "immigration",
    "synfuels-corporation-cutback",
    "education-spending",
    "superfund-right-to-sue",
    "crime",
    "duty-free-exports",
    "export-administration-act-south-africa",
]
VOTE_ENCODING = {"y": 1.0, "n": -1.0, "?": 0.0}
SHIPPED_DATA = Path(__file__).parent / "data" / "house-votes-84.data"
SOURCE = "UCI Congressional Voting Records (Schlimmer 1987), https://doi.org/10.24432/C5C01P"
DEFAULT_EPOCHS = 60
DEFAULT_BATCH_SIZE = 16
FOLDS = 10
TARGET_CV_ACCURACY = 0.95


def encode_votes(votes: Sequence[str]) -> np.ndarray:
    """16 vote tokens ('y', 'n', '?') in UCI column order -> float32 [16]."""
    if len(votes) != len(VOTE_COLUMNS):
        raise ValueError(f"expected {len(VOTE_COLUMNS)} votes, got {len(votes)}")
    try:
        return np.array([VOTE_ENCODING[v] for v in votes], dtype=np.float32)
    except KeyError as exc:
        raise ValueError(f"a vote must be one of 'y', 'n', '?', got {exc.args[0]!r}") from exc


def read_votes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The UCI file -> (votes float32 [n, 16], party int [n]: 0 democrat, 1 republican)."""
    rows: list[np.ndarray] = []
    parties: list[int] = []
    for line_no, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        party, *votes = line.strip().split(",")
        try:
            if party not in LABELS:
                raise ValueError(f"party must be one of {LABELS}, got {party!r}")
            rows.append(encode_votes(votes))
        except ValueError as exc:
            raise DataNotFoundError(f"{path}:{line_no}: not a house-votes-84 row: {exc}") from exc
        parties.append(LABELS.index(party))
    if not rows:
        raise DataNotFoundError(f"{path} holds no rows")
    return np.stack(rows), np.array(parties, dtype=np.int64)


def load_votes(data: Path | None) -> tuple[np.ndarray, np.ndarray, Path]:
    """Votes from --data, else the copy shipped in training/data/."""
    path = data if data is not None else SHIPPED_DATA
    if not path.is_file():
        raise DataNotFoundError(f"house-votes-84 data not found at {path}")
    votes, parties = read_votes(path)
    return votes, parties, path


def build_model() -> Any:
    """The course's dense network (16 -> 32 -> 16 -> 1), with dropout against overfitting."""
    import keras
    from keras import layers

    inputs = keras.Input((len(VOTE_COLUMNS),), name="votes")
    x = layers.Dense(16, activation="relu")(inputs)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(16, activation="relu")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="republican")(x)
    model = keras.Model(inputs, outputs, name=NAME)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def cross_validate(
    votes: np.ndarray, parties: np.ndarray, *, epochs: int, batch_size: int, seed: int
) -> tuple[list[float], np.ndarray]:
    """Stratified k-fold accuracy of fresh models; also every row's out-of-fold prediction."""
    import keras
    from rich.progress import track
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    accuracies: list[float] = []
    out_of_fold = np.zeros(len(parties), dtype=np.int64)
    splits = list(folds.split(votes, parties))
    for fold, (train_idx, test_idx) in enumerate(
        track(splits, description=f"{FOLDS}-fold cross-validation")
    ):
        keras.utils.set_random_seed(seed + fold)
        model = build_model()
        model.fit(
            votes[train_idx], parties[train_idx], epochs=epochs, batch_size=batch_size, verbose=0
        )
        predicted = (model.predict(votes[test_idx], verbose=0)[:, 0] >= 0.5).astype(np.int64)
        out_of_fold[test_idx] = predicted
        accuracies.append(float((predicted == parties[test_idx]).mean()))
    return accuracies, out_of_fold


def train(options: TrainOptions) -> Path:
    """Cross-validate, fit on all rows, export the next version, return its folder."""
    import keras
    import tensorflow as tf

    from training.export import ExportRequest, export_trained
    from training.plots import confusion_matrix, plot_confusion_matrix

    votes, parties, path = load_votes(options.data)
    votes, parties = votes[: options.limit], parties[: options.limit]
    epochs = options.epochs or DEFAULT_EPOCHS
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE

    accuracies, out_of_fold = cross_validate(
        votes, parties, epochs=epochs, batch_size=batch_size, seed=options.seed
    )
    keras.utils.set_random_seed(options.seed)
    model = build_model()
    history = model.fit(votes, parties, epochs=epochs, batch_size=batch_size, verbose=0).history

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="votes")])
    def serve(votes: tf.Tensor) -> dict[str, tf.Tensor]:
        republican = model(votes, training=False)
        return {"probabilities": tf.concat([1.0 - republican, republican], axis=1)}

    cv_metrics = {
        "cv_accuracy_mean": float(np.mean(accuracies)),
        "cv_accuracy_std": float(np.std(accuracies)),
        "cv_folds": FOLDS,
        "cv_fold_accuracies": accuracies,
        "cv_rows": len(parties),
        "target_cv_accuracy": TARGET_CV_ACCURACY,
    }

    def evaluate(loaded: Any, extra: Path) -> dict[str, Any]:
        probabilities = loaded.signatures["serving_default"](votes=votes)["probabilities"].numpy()
        counts = confusion_matrix(parties, out_of_fold, len(LABELS))
        plot_confusion_matrix(
            counts,
            LABELS,
            extra / "confusion_matrix.png",
            f"votes: out-of-fold predictions, {FOLDS}-fold CV on {len(parties)} rows\n"
            f"accuracy {cv_metrics['cv_accuracy_mean']:.2%}",
        )
        return {"fit_accuracy_all_rows": float((probabilities.argmax(1) == parties).mean())}

    card = _card(options, path, epochs, batch_size, cv_metrics)
    request = ExportRequest(
        name=NAME, model=model, serving_fn=serve, labels=LABELS, card=card, evaluate=evaluate
    )
    return export_trained(request, options, history, "votes: final fit on all rows")


def _card(
    options: TrainOptions, path: Path, epochs: int, batch_size: int, cv_metrics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "task": "binary classification: party from 16 congressional votes (1984)",
        "description": "Dense 16-32-16-1 with dropout; missing votes kept as 0.",
        "input": {
            "votes": "float32 [batch, 16] in the column order of `vote_columns`; "
            "yes = +1, no = -1, not voted ('?') = 0",
        },
        "vote_columns": VOTE_COLUMNS,
        "vote_encoding": VOTE_ENCODING,
        "output": {"probabilities": "float32 [batch, 2]: P(democrat), P(republican)"},
        "data": {
            **data_provenance(path, source=SOURCE, license_="CC BY 4.0"),
            "rows": int(cv_metrics["cv_rows"]),
            "limited_to": options.limit,
        },
        "hyperparameters": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "Adam 1e-3",
            "dropout": 0.2,
            "seed": options.seed,
        },
        "metrics": cv_metrics,
        **provenance(),
    }
