"""The `modelserve` command, run as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import MODELS_DIR

MODELSERVE = shutil.which("modelserve") or str(Path(sys.executable).parent / "modelserve")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MODELSERVE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "models", "serve"):
        assert command in result.stdout
    for command in ("train", "models", "serve"):
        assert run(command, "--help").returncode == 0


def test_models_lists_shipped_versions_and_metrics() -> None:
    result = run("models", "--model-base-path", str(MODELS_DIR))
    assert result.returncode == 0, result.stderr
    assert "digits" in result.stdout
    assert "votes" in result.stdout
    assert "test_accuracy=99." in result.stdout
    assert "cv_accuracy_mean=9" in result.stdout


def test_model_base_path_from_environment(tmp_path: Path) -> None:
    result = run("models", env={"MODELSERVE_MODEL_BASE_PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "no models under" in result.stderr


def test_train_with_missing_data_path_fails_clearly(tmp_path: Path) -> None:
    result = run("train", "digits", "--data", str(tmp_path / "nope.npz"), "--output", str(tmp_path))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert not (tmp_path / "digits").exists()


def test_train_rejects_unknown_model_and_bad_epochs() -> None:
    assert run("train", "cats").returncode == 2
    assert run("train", "votes", "--epochs", "0").returncode == 2


def test_train_votes_end_to_end(tmp_path: Path) -> None:
    result = run("train", "votes", "--epochs", "1", "--cv-repeats", "1", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "votes" / "1" / "saved_model.pb").is_file()
    assert "cv_accuracy_mean=" in result.stdout
    listing = run("models", "--model-base-path", str(tmp_path))
    assert "votes" in listing.stdout
