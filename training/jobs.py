"""The training jobs `modelserve train` knows, imported only when one is run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from training.options import TrainOptions

# name -> module with a `train(options) -> Path` function.
JOBS: dict[str, str] = {
    "digits": "training.digits",
    "votes": "training.votes",
    "sentiment": "training.sentiment",
    "resnet50": "training.resnet50",
}


def train_function(name: str) -> Callable[[TrainOptions], Path]:
    train: Callable[[TrainOptions], Path] = importlib.import_module(JOBS[name]).train
    return train
