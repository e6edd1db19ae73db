"""Finding and reading data sets: explicit paths, the shared folder, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fake_mnist
from training.data import DataNotFoundError, find_data_file, locate_data, sha256_of
from training.digits import load_mnist, read_mnist_npz


def test_reads_an_npz_in_keras_layout(fake_mnist: Path) -> None:
    mnist = read_mnist_npz(fake_mnist)
    assert mnist.x_train.shape == (256, 28, 28)
    assert mnist.x_test.shape == (64, 28, 28)
    assert mnist.y_train.shape == (256,)
    assert mnist.path == fake_mnist


def test_explicit_path_wins_over_shared_data(fake_mnist: Path) -> None:
    assert load_mnist(fake_mnist, allow_download=False).path == fake_mnist


def test_data_dir_env_is_searched(no_shared_data: Path) -> None:
    write_fake_mnist(no_shared_data / "mnist.npz")
    assert load_mnist(None, allow_download=False).path == no_shared_data / "mnist.npz"


def test_explicit_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataNotFoundError, match=r"--data .*nope\.npz does not exist"):
        find_data_file(missing, "mnist.npz", what="MNIST")


def test_missing_data_says_where_it_looked_and_how_to_fix_it(no_shared_data: Path) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        load_mnist(None, allow_download=False)
    message = str(caught.value)
    assert "MNIST not found" in message
    assert str(no_shared_data / "mnist.npz") in message
    assert "--data PATH" in message
    assert "MODELSERVE_DATA_DIR" in message


@pytest.mark.parametrize(
    ("arrays", "complaint"),
    [
        ({"x_train": np.zeros((2, 28, 28), np.uint8)}, "missing array"),
        (
            {
                "x_train": np.zeros((2, 32, 32), np.uint8),
                "y_train": np.zeros(2, np.uint8),
                "x_test": np.zeros((2, 28, 28), np.uint8),
                "y_test": np.zeros(2, np.uint8),
            },
            r"x_train must be uint8 \[n, 28, 28\]",
        ),
        (
            {
                "x_train": np.zeros((2, 28, 28), np.uint8),
                "y_train": np.zeros(3, np.uint8),
                "x_test": np.zeros((2, 28, 28), np.uint8),
                "y_test": np.zeros(2, np.uint8),
            },
            "one label per image",
        ),
    ],
)
def test_malformed_npz_is_rejected_with_reason(
    tmp_path: Path, arrays: dict[str, np.ndarray], complaint: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataNotFoundError, match=complaint):
        read_mnist_npz(path)


def test_not_an_npz_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    path.write_text("not a zip")
    with pytest.raises(DataNotFoundError, match=r"not a readable \.npz"):
        read_mnist_npz(path)


def test_sha256_pins_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_of(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_download_is_the_last_resort_and_its_failure_is_reported(no_shared_data: Path) -> None:
    downloaded = write_fake_mnist(no_shared_data / "downloaded.npz")
    path = locate_data(None, "x.npz", what="X", download=lambda: downloaded, download_hint="")
    assert path == downloaded

    def fail() -> Path:
        raise DataNotFoundError("URL fetch failure: no route")

    with pytest.raises(DataNotFoundError, match=r"X not found(.|\n)*no network\?\n.*no route"):
        locate_data(None, "x.npz", what="X", download=fail, download_hint="no network?")
