"""The training jobs `modelserve train` knows, imported only when one is run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.download import Progress
from training.options import TrainOptions

# name -> module with a `train(options) -> Path` function.
JOBS: dict[str, str] = {
    "digits": "training.digits",
    "votes": "training.votes",
    "sentiment": "training.sentiment",
    "resnet50": "training.resnet50",
}


@dataclass(frozen=True)
class ReadyMade:
    """A job that needs no data and no training: only files to fetch, then an export.
    `modelserve serve` exports such a model on its own when it is missing
    (service.core.auto_export)."""

    name: str
    fetches: str  # what is downloaded, how large, where it is kept (the log, the README)
    source_setting: str  # the serve setting naming a local copy or a mirror
    how_to_provide: str  # one line: the file, its checksum, where to get it, which option
    fetch: Callable[[TrainOptions, Progress], Any]  # raises DataNotFoundError saying how to
    export: Callable[[TrainOptions, Any], Path]  # ... provide; then the export of what it got


# Jobs that need no data and no training; each module has a READY_MADE describing it.
NEEDS_NO_TRAINING = frozenset({"resnet50"})


def ready_made(name: str) -> ReadyMade | None:
    """The job `name` when it needs no training (None otherwise); imports no TensorFlow."""
    if name not in NEEDS_NO_TRAINING:
        return None
    job: ReadyMade = importlib.import_module(JOBS[name]).READY_MADE
    return job


def train_function(name: str) -> Callable[[TrainOptions], Path]:
    train: Callable[[TrainOptions], Path] = importlib.import_module(JOBS[name]).train
    return train
