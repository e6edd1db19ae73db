"""Finding and reading data sets: explicit paths, the data folder, downloads, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fake_mnist
from training.data import (
    DATA_DIR_ENV,
    DataNotFoundError,
    find_data_file,
    keras_download,
    locate_data,
    sha256_of,
    shared_data_dirs,
)
from training.digits import MNIST_URL, load_mnist, read_mnist_npz
from training.sentiment import IMDB_URL, load_reviews

MODELSERVE = shutil.which("modelserve") or str(Path(sys.executable).parent / "modelserve")


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


def test_data_dir_env_replaces_the_development_fallbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert shared_data_dirs() == [tmp_path]
    monkeypatch.delenv(DATA_DIR_ENV)
    assert all(folder.parts[-2:] == ("shared", "data") for folder in shared_data_dirs())


# --- downloads: the last resort, and what the error says when they gave nothing ----------


def _never_called() -> Path:
    raise AssertionError("the download must not be tried")


X_URL = "https://example.org/x.npz"


def locate_x(download: Callable[[], Path], allow_download: bool = True) -> Path:
    """locate_data for a data set "X" kept as x.npz and downloaded from X_URL."""
    return locate_data(
        None, "x.npz", what="X", download=download, url=X_URL, allow_download=allow_download
    )


def refusal(download: Callable[[], Path], allow_download: bool) -> str:
    """What locate_x says when it finds no X."""
    with pytest.raises(DataNotFoundError) as caught:
        locate_x(download, allow_download)
    return str(caught.value)


def test_download_is_the_last_resort(no_shared_data: Path) -> None:
    downloaded = write_fake_mnist(no_shared_data / "downloaded.npz")
    assert locate_x(lambda: downloaded) == downloaded
    local = write_fake_mnist(no_shared_data / "x.npz")
    assert locate_x(_never_called) == local


def test_no_download_says_downloads_were_turned_off(no_shared_data: Path) -> None:
    message = refusal(_never_called, allow_download=False)
    assert "X not found" in message
    assert str(no_shared_data / "x.npz") in message
    assert "Downloads are turned off (--no-download)" in message
    assert "https://example.org/x.npz was not tried" in message
    assert "failed" not in message
    assert "network" not in message
    assert "--data PATH" in message


def test_a_failed_download_says_it_failed_and_why(no_shared_data: Path) -> None:
    def fail() -> Path:
        raise DataNotFoundError("URL fetch failure on https://example.org/x.npz: no route")

    message = refusal(fail, allow_download=True)
    assert "X not found" in message
    assert "The download of https://example.org/x.npz failed: URL fetch failure" in message
    assert "no route" in message
    assert "turned off" not in message
    assert "--data PATH" in message


@pytest.mark.parametrize(
    ("load", "what", "url"),
    [(load_mnist, "MNIST", MNIST_URL), (load_reviews, "IMDB reviews", IMDB_URL)],
)
def test_each_job_says_its_download_was_turned_off(
    no_shared_data: Path, load: Callable[..., object], what: str, url: str
) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        load(None, allow_download=False)
    message = str(caught.value)
    assert f"{what} not found" in message
    assert f"Downloads are turned off (--no-download), so {url} was not tried" in message


def test_keras_download_failure_carries_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9 (discard) of the loopback; no proxy may stand in between.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "*")
    url = "http://127.0.0.1:9/x.npz"
    with pytest.raises(DataNotFoundError) as caught:
        keras_download("x.npz", url, cache_subdir=str(tmp_path / "cache"))
    message = str(caught.value)
    assert url in message
    assert "refused" in message.lower()


def test_cli_no_download_says_downloads_were_turned_off(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    result = subprocess.run(
        [MODELSERVE, "train", "digits", "--no-download", "--output", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", DATA_DIR_ENV: str(empty)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "MNIST not found" in message
    assert str(empty / "mnist.npz") in message
    assert "Downloads are turned off (--no-download)" in message
    assert "network" not in message
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "models" / "digits").exists()
