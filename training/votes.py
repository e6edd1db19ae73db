"""`votes`: party (democrat/republican) from the 16 key votes of the 1984 U.S. House.

Serving signature: `votes` float32 [batch, 16], one value per vote in UCI column order
(VOTE_COLUMNS), encoded yes = +1, no = -1, not voted (`?`) = 0 -> `probabilities` float32
[batch, 2] for (democrat, republican).

A missing vote is kept as information (0, between yes and no) rather than a reason to drop
the row: all 435 members are used, where the course dropped 203 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
DEFAULT_EPOCHS = 300  # full-batch steps: the logistic regression is fitted to convergence
DEFAULT_BATCH_SIZE = 512  # more than the 435 rows: every step sees them all
FOLDS = 10
CV_REPEATS = 5
TARGET_CV_ACCURACY = 0.96


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


@dataclass(frozen=True)
class Design:
    """The network and how it is fitted; the model card records it (`hyperparameters`)."""

    hidden: tuple[int, ...] = (16, 32, 16)
    dropout: float = 0.2
    l2: float = 0.0
    label_smoothing: float = 0.0
    missing_indicator: bool = False
    """Also feed a "did not vote" flag per bill (computed in the model from the 0 input)."""
    members: int = 1
    """Independently initialised networks trained side by side; the answer is their mean."""
    learning_rate: float = 1e-3


# A regularised logistic regression: the votes are close to linearly separable, and every
# deeper variant measured (docs/models.md) did no better over 5 x 10 folds.
DESIGN = Design(hidden=(), dropout=0.0, l2=1.3e-3, learning_rate=5e-2)


def describe(design: Design) -> str:
    """The model card's one-line description of `design`."""
    sizes = "-".join(str(n) for n in (len(VOTE_COLUMNS), *design.hidden, 1))
    parts = [f"Dense {sizes}" + ("" if design.hidden else " (logistic regression)")]
    if design.missing_indicator:
        parts.append("a not-voted flag per bill")
    if design.dropout:
        parts.append(f"dropout {design.dropout:g}")
    if design.l2:
        parts.append(f"L2 {design.l2:g}")
    if design.label_smoothing:
        parts.append(f"label smoothing {design.label_smoothing:g}")
    if design.members > 1:
        parts.append(f"mean of {design.members} independently initialised members")
    return ", ".join(parts) + "; missing votes kept as 0."


def build_model(design: Design = DESIGN) -> Any:
    """`design.members` dense networks on the 16 votes -> [batch, members] P(republican)."""
    import keras
    from keras import layers, ops

    inputs = keras.Input((len(VOTE_COLUMNS),), name="votes")
    features = inputs
    if design.missing_indicator:
        not_voted = 1.0 - ops.abs(inputs)  # 1 for '?' (0), 0 for yes/no (+1/-1)
        features = layers.Concatenate()([inputs, not_voted])
    regularizer = keras.regularizers.L2(design.l2) if design.l2 else None
    outputs = []
    for _ in range(design.members):
        x = features
        for units in design.hidden:
            x = layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
            if design.dropout:
                x = layers.Dropout(design.dropout)(x)
        outputs.append(layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer)(x))
    joined = outputs[0] if len(outputs) == 1 else layers.Concatenate()(outputs)
    republican = layers.Identity(name="republican")(joined)
    model = keras.Model(inputs, republican, name=NAME)
    model.compile(
        optimizer=keras.optimizers.Adam(design.learning_rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=design.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def fit(
    design: Design,
    votes: np.ndarray,
    parties: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[Any, dict[str, list[float]]]:
    """A fresh model fitted on (votes, parties); every member learns the same targets."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(design)
    targets = np.repeat(parties[:, None].astype(np.float32), design.members, axis=1)
    history = model.fit(votes, targets, epochs=epochs, batch_size=batch_size, verbose=0)
    return model, history.history


def republican_probability(model: Any, votes: np.ndarray) -> np.ndarray:
    """The members' mean P(republican), float [n]."""
    members: np.ndarray = np.asarray(model.predict(votes, verbose=0))  # [n, members]
    return np.asarray(members.mean(axis=1))


@dataclass(frozen=True)
class CrossValidation:
    """Repeated stratified k-fold: every fold of every repeat is a fresh model."""

    fold_accuracies: list[list[float]]  # [repeat][fold]
    out_of_fold: np.ndarray  # int [repeats, rows]: each row's prediction by the model without it

    @property
    def accuracies(self) -> list[float]:
        return [a for repeat in self.fold_accuracies for a in repeat]

    def metrics(self) -> dict[str, Any]:
        repeats, folds = len(self.fold_accuracies), len(self.fold_accuracies[0])
        return {
            "cv_method": f"repeated stratified {folds}-fold ({repeats} x {folds} fits)",
            "cv_accuracy_mean": float(np.mean(self.accuracies)),
            "cv_accuracy_std": float(np.std(self.accuracies)),
            "cv_folds": folds,
            "cv_repeats": repeats,
            "cv_repeat_means": [float(np.mean(r)) for r in self.fold_accuracies],
            "cv_fold_accuracies": self.accuracies,
            "cv_rows": self.out_of_fold.shape[1],
        }


def cross_validate(
    votes: np.ndarray,
    parties: np.ndarray,
    *,
    design: Design = DESIGN,
    epochs: int,
    batch_size: int,
    seed: int,
    repeats: int = CV_REPEATS,
) -> CrossValidation:
    """Accuracy of fresh models over `repeats` x FOLDS stratified folds (sklearn's
    RepeatedStratifiedKFold, seeded), and each row's out-of-fold prediction per repeat."""
    from rich.progress import track
    from sklearn.model_selection import RepeatedStratifiedKFold

    folds = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=repeats, random_state=seed)
    accuracies: list[list[float]] = [[] for _ in range(repeats)]
    out_of_fold = np.zeros((repeats, len(parties)), dtype=np.int64)
    splits = list(folds.split(votes, parties))
    description = f"{repeats} x {FOLDS}-fold cross-validation"
    for i, (train_idx, test_idx) in enumerate(track(splits, description=description)):
        model, _ = fit(
            design,
            votes[train_idx],
            parties[train_idx],
            epochs=epochs,
            batch_size=batch_size,
            seed=seed + i,
        )
        predicted = (republican_probability(model, votes[test_idx]) >= 0.5).astype(np.int64)
        out_of_fold[i // FOLDS, test_idx] = predicted
        accuracies[i // FOLDS].append(float((predicted == parties[test_idx]).mean()))
    return CrossValidation(accuracies, out_of_fold)


def train(options: TrainOptions) -> Path:
    """Cross-validate, fit on all rows, export the next version, return its folder."""
    import tensorflow as tf

    from training.export import ExportRequest, export_trained
    from training.plots import confusion_matrix, plot_confusion_matrix

    votes, parties, path = load_votes(options.data)
    votes, parties = votes[: options.limit], parties[: options.limit]
    epochs = options.epochs or DEFAULT_EPOCHS
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    repeats = options.cv_repeats or CV_REPEATS

    cv = cross_validate(
        votes, parties, epochs=epochs, batch_size=batch_size, seed=options.seed, repeats=repeats
    )
    model, history = fit(
        DESIGN, votes, parties, epochs=epochs, batch_size=batch_size, seed=options.seed
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="votes")])
    def serve(votes: tf.Tensor) -> dict[str, tf.Tensor]:
        members = model(votes, training=False)  # [batch, members]
        republican = tf.reduce_mean(members, axis=1, keepdims=True)
        return {"probabilities": tf.concat([1.0 - republican, republican], axis=1)}

    cv_metrics = {**cv.metrics(), "target_cv_accuracy": TARGET_CV_ACCURACY}

    def evaluate(loaded: Any, extra: Path) -> dict[str, Any]:
        probabilities = loaded.signatures["serving_default"](votes=votes)["probabilities"].numpy()
        # Every repeat's out-of-fold predictions: each row counts once per repeat.
        counts = confusion_matrix(
            np.tile(parties, repeats), cv.out_of_fold.reshape(-1), len(LABELS)
        )
        plot_confusion_matrix(
            counts,
            LABELS,
            extra / "confusion_matrix.png",
            f"votes: out-of-fold predictions, {repeats} x {FOLDS}-fold CV on {len(parties)} rows"
            f"\naccuracy {cv_metrics['cv_accuracy_mean']:.2%} "
            f"\u00b1 {cv_metrics['cv_accuracy_std']:.2%}",
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
        "description": describe(DESIGN),
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
            "optimizer": f"Adam {DESIGN.learning_rate:g}",
            **{
                key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(DESIGN).items()
                if key != "learning_rate"
            },
            "seed": options.seed,
        },
        "metrics": cv_metrics,
        **provenance(),
    }
