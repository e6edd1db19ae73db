"""Shared fixtures: quiet TensorFlow, tiny data sets, an isolated data-search environment, image
encoding."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
# Servers started by tests (in process or not) never export missing models on their own (no
# downloads, nothing written into models/); tests/test_auto_export.py turns it on where tested.
os.environ["MODELSERVE_AUTO_EXPORT"] = "0"

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["tests.route_server"]  # the `served` fixture: a loopback HTTP file server

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
FIXTURES = Path(__file__).parent / "fixtures"


def shipped_version(model: str) -> int:
    """The version of `model` committed in models/ (the repository keeps only the newest)."""
    return max(int(p.name) for p in (MODELS_DIR / model).iterdir() if p.name.isdigit())


def write_fake_mnist(path: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """An npz in Keras' MNIST layout: each digit drawn as a bright bar at a class-specific row,
    so it is learnable in a few steps but is not MNIST."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels, strict=True):
            image[4 + 2 * int(label) : 6 + 2 * int(label), 4:24] = 255
        return images, labels

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array), "PNG")


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    return write_fake_mnist(tmp_path / "mnist.npz")


@pytest.fixture
def no_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the data search see nothing: empty data dir env, cwd and project root in tmp."""
    empty = tmp_path / "empty"
    (empty / "project").mkdir(parents=True)
    monkeypatch.setenv("MODELSERVE_DATA_DIR", str(empty))
    monkeypatch.chdir(empty / "project")
    monkeypatch.setattr("training.data.PROJECT_ROOT", empty / "project")
    return empty


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras home (its cache of downloads), for this process and its children."""
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home
