"""The training jobs `modelserve train` knows, imported only when one is run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from training.options import TrainOptions

# name -> module with a `train(options) -> Path` function; None: not built yet.
JOBS: dict[str, str | None] = {
    "digits": "training.digits",
    "votes": "training.votes",
    "sentiment": "training.sentiment",
    "resnet50": None,
}


class JobNotAvailableError(RuntimeError):
    """The job is named in the CLI but its training code has not landed yet."""


def train_function(name: str) -> Callable[[TrainOptions], Path]:
    module_name = JOBS[name]
    if module_name is None:
        raise JobNotAvailableError(
            f"training job {name!r} is not available yet (tracked in the sentiment/resnet50 "
            "training issue); available: " + ", ".join(j for j, m in JOBS.items() if m)
        )
    train: Callable[[TrainOptions], Path] = importlib.import_module(module_name).train
    return train
