"""Options shared by every training job, as the CLI passes them in."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

# Kept free of TensorFlow imports: the load generator (loadtests/) reads data through training.
DEFAULT_KEEP_VERSIONS = 3


@dataclass(frozen=True)
class TrainOptions:
    data: Path | None = None
    """Data set file or folder; None searches $MODELSERVE_DATA_DIR and ../shared/data."""
    output: Path = Path("models")
    """Model base path: the version is written to <output>/<name>/<version>/."""
    model_dir: Path | None = None
    """The model's folder, when it is not <output>/<name> (a serving config's base_path)."""
    epochs: int | None = None
    """Training epochs; None uses the job's own default."""
    batch_size: int | None = None
    """Mini-batch size; None uses the job's own default."""
    limit: int | None = None
    """Use only the first N examples of each split (smoke runs); recorded in the model card."""
    seed: int = 1337
    """Seed for shuffling, initialisation and folds, so a run can be repeated."""
    keep_versions: int | None = DEFAULT_KEEP_VERSIONS
    """How many versions of the model stay on disk after export; None keeps all."""
    allow_download: bool = True
    """Try the public download (keras.datasets) when no local copy is found."""
    cv_repeats: int | None = None
    """votes only: repeats of its stratified 10-fold cross-validation; None uses the job's
    default (5). Smoke runs pass 1."""
    weights: str | None = None
    """resnet50 only: "imagenet" or None (Keras' cache, else its download), a path to a local
    weights file (.h5), or "none" for random weights (tests, load/performance work)."""


def keras_verbosity() -> int:
    """A live progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2
