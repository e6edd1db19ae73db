"""`digits`: a CNN for handwritten digits, trained on MNIST.

Serving signature: `image` float32 [batch, 28, 28, 1], white ink on black, scaled to 0..1
(pixel / 255, as MNIST stores it) -> `probabilities` float32 [batch, 10] for digits 0..9,
temperature-scaled on the held-out validation images (training.calibration) so that a
confidence means what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.calibration import (
    ECE_BINS,
    Calibration,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    plot_reliability,
)
from training.data import DataNotFoundError, keras_download, locate_data
from training.digit_outliers import KINDS, outliers
from training.model_card import data_provenance, provenance
from training.options import TrainOptions, keras_verbosity

NAME = "digits"
LABELS = [str(d) for d in range(10)]
MNIST_FILE = "mnist.npz"
# Keras' copy, as keras.datasets.mnist.load_data() fetches and checks it.
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_SOURCE = "MNIST (LeCun, Cortes, Burges), http://yann.lecun.com/exdb/mnist/"
DEFAULT_EPOCHS = 15
DEFAULT_BATCH_SIZE = 128
VALIDATION_SIZE = 5000
OUTLIER_SHARE = 0.1  # outliers added to the training set, per training image
OUTLIERS_PER_KIND = 500  # fresh outliers of each kind the card measures the model on
# A digit answered with less confidence is flagged `uncertain` by the task API
# (service.tasks.routes) and measured in the card: the probabilities are temperature-scaled,
# so below 0.8 the model is right less than about 80 % of the time.
UNCERTAIN_BELOW = 0.8
TARGET_ACCURACY = 0.993


@dataclass
class Mnist:
    x_train: np.ndarray  # uint8 [n, 28, 28]
    y_train: np.ndarray  # uint8 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    path: Path


def load_mnist(data: Path | None, allow_download: bool) -> Mnist:
    """MNIST from --data, the data folder, or Keras' download (as keras.datasets.mnist does),
    in that order."""
    path = locate_data(
        data,
        MNIST_FILE,
        what="MNIST",
        download=lambda: keras_download(MNIST_FILE, MNIST_URL, file_hash=MNIST_SHA256),
        url=MNIST_URL,
        allow_download=allow_download,
    )
    return read_mnist_npz(path)


def read_mnist_npz(path: Path) -> Mnist:
    """Read an npz in Keras' MNIST layout, checking keys, shapes and dtypes."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise DataNotFoundError(
            f"{path} is not in Keras' MNIST layout: missing array {exc}; "
            "expected x_train, y_train, x_test, y_test"
        ) from exc
    except (OSError, ValueError) as exc:
        raise DataNotFoundError(f"{path} is not a readable .npz file: {exc}") from exc
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataNotFoundError(
                f"{path}: x_{split} must be uint8 [n, 28, 28], got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise DataNotFoundError(f"{path}: y_{split} must have one label per image")
    return Mnist(**arrays, path=path)


def build_model() -> Any:
    """Two conv blocks with batch norm, then a dense head: the course CNN, made deeper."""
    import keras
    from keras import layers

    def conv_block(x: Any, filters: int) -> Any:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
        return layers.Dropout(0.25)(x)

    inputs = keras.Input((28, 28, 1), name="image")
    x = conv_block(inputs, 32)
    x = conv_block(x, 64)
    x = layers.Flatten()(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=NAME)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> float32 [n, 28, 28, 1] in 0..1, the serving input format."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def train(options: TrainOptions) -> Path:
    """Train, export the next version under options.output, and return its folder."""
    import keras
    import tensorflow as tf

    from training.export import ExportRequest, export_trained

    mnist = load_mnist(options.data, options.allow_download)
    epochs = options.epochs or DEFAULT_EPOCHS
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    keras.utils.set_random_seed(options.seed)

    x_all, y_all = mnist.x_train[: options.limit], mnist.y_train[: options.limit]
    order = np.random.default_rng(options.seed).permutation(len(x_all))
    n_val = min(VALIDATION_SIZE, len(x_all) // 10)
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_train, y_train = to_model_input(x_all[train_idx]), y_all[train_idx].astype(np.int64)
    x_val, y_val = to_model_input(x_all[val_idx]), y_all[val_idx].astype(np.int64)
    # Outlier exposure: pictures that are no digit, trained towards the uniform answer.
    n_outliers = int(OUTLIER_SHARE * len(x_train))
    exposed = outliers(n_outliers, x_all[train_idx], options.seed)
    x_fit = np.concatenate([x_train, to_model_input(exposed)])
    targets = np.concatenate(
        [np.eye(10, dtype=np.float32)[y_train], np.full((n_outliers, 10), 0.1, np.float32)]
    )

    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_fit, targets))
        .shuffle(len(x_fit), seed=options.seed)
        .map(_random_shift, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps = epochs * int(np.ceil(len(x_fit) / batch_size))
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss="categorical_crossentropy",
        metrics=[accuracy],
    )
    history = model.fit(
        train_ds,
        epochs=epochs,
        validation_data=(x_val, np.eye(10, dtype=np.float32)[y_val]),
        shuffle=False,  # the dataset shuffles itself
        verbose=keras_verbosity(),
    ).history

    # Temperature scaling on the validation images the training never saw.
    calibration = fit_temperature(model.predict(x_val, batch_size=1000, verbose=0), y_val)
    temperature = tf.constant(calibration.temperature, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(image, training=False)
        logits = tf.math.log(tf.maximum(probabilities, 1e-12))  # up to a per-row constant
        return {"probabilities": tf.nn.softmax(logits / temperature)}

    x_test, y_test = mnist.x_test[: options.limit], mnist.y_test[: options.limit]
    uncalibrated = model.predict(to_model_input(x_test), batch_size=1000, verbose=0)

    def evaluate(loaded: Any, extra: Path) -> dict[str, Any]:
        metrics = evaluate_digits(loaded, x_test, y_test, extra)
        calibrated = _probabilities(loaded, x_test)  # the exported model's own answers
        return {
            **metrics,
            "calibration": _calibration_card(calibration, uncalibrated, calibrated, y_test, extra),
            "uncertainty": _uncertainty_card(loaded, calibrated, x_test, options.seed + 1),
        }

    card = _card(options, mnist.path, epochs, batch_size, history, len(x_train))
    request = ExportRequest(
        name=NAME, model=model, serving_fn=serve, labels=LABELS, card=card, evaluate=evaluate
    )
    return export_trained(request, options, history, "digits: MNIST CNN")


def accuracy(y_true: Any, y_pred: Any) -> Any:
    """Arg-max accuracy over the digits of a batch; the outliers (uniform targets) have no
    right answer and are left out."""
    import tensorflow as tf

    is_digit = tf.reduce_max(y_true, axis=1) > 0.5
    right = tf.equal(tf.argmax(y_true, axis=1), tf.argmax(y_pred, axis=1)) & is_digit
    digits = tf.maximum(tf.reduce_sum(tf.cast(is_digit, tf.float32)), 1.0)
    return tf.reduce_sum(tf.cast(right, tf.float32)) / digits


def _probabilities(loaded: Any, images: np.ndarray) -> np.ndarray:
    signature = loaded.signatures["serving_default"]
    return np.concatenate(
        [
            signature(image=to_model_input(images[start : start + 1000]))["probabilities"]
            for start in range(0, len(images), 1000)
        ]
    )


def _uncertainty_card(
    loaded: Any, test_probabilities: np.ndarray, test_images: np.ndarray, seed: int
) -> dict[str, Any]:
    """How often the exported model is unsure (top probability below UNCERTAIN_BELOW, as the
    task API flags it): on the test digits (false alarms) and on fresh outliers of each kind,
    made from the test digits with a seed the training did not use."""
    per_kind = {}
    for index, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, index])
        pictures = np.stack([kind(rng, test_images) for _ in range(OUTLIERS_PER_KIND)])
        per_kind[kind.__name__] = _unsure_share(_probabilities(loaded, pictures))
    return {
        "threshold": UNCERTAIN_BELOW,
        "test_digits_flagged_uncertain": _unsure_share(test_probabilities),
        "outliers_flagged_uncertain": per_kind,
        "outliers_per_kind": OUTLIERS_PER_KIND,
    }


def _unsure_share(probabilities: np.ndarray) -> float:
    return float((probabilities.max(axis=1) < UNCERTAIN_BELOW).mean())


def _calibration_card(
    calibration: Calibration,
    uncalibrated: np.ndarray,
    calibrated: np.ndarray,
    labels: np.ndarray,
    extra: Path,
) -> dict[str, Any]:
    """The temperature, and the test set's ECE and NLL before and after it (`calibrated`: the
    exported model's own answers), with a reliability diagram."""
    plot_reliability(
        uncalibrated,
        calibrated,
        labels,
        extra / "reliability.png",
        f"digits: MNIST test set ({len(labels)} images), temperature {calibration.temperature:.3f}",
    )
    return {
        "method": "temperature scaling, fitted on the held-out validation images (NLL)",
        "temperature": calibration.temperature,
        "validation_nll_before": calibration.nll_before,
        "validation_nll_after": calibration.nll_after,
        "test_ece_before": expected_calibration_error(uncalibrated, labels),
        "test_ece_after": expected_calibration_error(calibrated, labels),
        "test_nll_before": negative_log_likelihood(uncalibrated, labels),
        "test_nll_after": negative_log_likelihood(calibrated, labels),
        "ece_bins": ECE_BINS,
    }


def _random_shift(image: Any, label: Any) -> tuple[Any, Any]:
    """Augmentation: shift an image by up to 2 pixels (pad with black, crop back to 28x28)."""
    import tensorflow as tf

    padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]])
    return tf.image.random_crop(padded, [28, 28, 1]), label


def evaluate_digits(
    loaded: Any, images: np.ndarray, labels: np.ndarray, extra: Path
) -> dict[str, Any]:
    """Accuracy of the exported SavedModel on the MNIST test images, plus a confusion matrix."""
    from training.evaluation import evaluate_classifier

    signature = loaded.signatures["serving_default"]

    def probabilities(batch: np.ndarray) -> Any:
        return signature(image=to_model_input(batch))["probabilities"]

    title = f"digits: MNIST test set ({len(labels)} images)"
    return evaluate_classifier(probabilities, images, labels, LABELS, 1000, extra, title)


def _card(
    options: TrainOptions,
    data_path: Path,
    epochs: int,
    batch_size: int,
    history: dict[str, list[float]],
    n_train: int,
) -> dict[str, Any]:
    return {
        "task": "image classification: handwritten digit 0-9",
        "description": "CNN (2x conv32, 2x conv64, batch norm, dropout, dense128) on MNIST.",
        "input": {
            "image": "float32 [batch, 28, 28, 1]: grayscale, white digit on black background, "
            "pixel/255 in 0..1, digit centred by centre of mass in a 20x20 box (MNIST format)"
        },
        "output": {"probabilities": "float32 [batch, 10]: softmax over digits 0..9 (labels)"},
        "data": {
            **data_provenance(data_path, source=MNIST_SOURCE, license_="CC BY-SA 3.0"),
            "train_examples": n_train,
            "limited_to": options.limit,
        },
        "hyperparameters": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "Adam, cosine-decayed learning rate from 2e-3",
            "augmentation": "random shift up to 2 pixels",
            "outlier_exposure": {
                "share": OUTLIER_SHARE,
                "target": "uniform over the 10 digits",
                "kinds": [kind.__name__ for kind in KINDS],
            },
            "seed": options.seed,
        },
        "metrics": {
            "final_train_accuracy": history["accuracy"][-1],
            "final_validation_accuracy": history["val_accuracy"][-1],
            "target_test_accuracy": TARGET_ACCURACY,
        },
        **provenance(),
    }
