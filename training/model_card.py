"""The provenance part of a model card: what made this model, with what, and when."""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from training.data import PROJECT_ROOT, sha256_of


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_commit() -> str:
    """The checkout's commit (`-dirty` when its code has uncommitted changes), or `unknown`."""
    try:
        commit = _git("rev-parse", "HEAD")
        # Only the code counts: models/ changes whenever a job exports into it.
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!models")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def framework_versions() -> dict[str, str]:
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def data_provenance(path: Path, *, source: str, license_: str) -> dict[str, Any]:
    """Where the training data came from, with a checksum that pins the exact bytes."""
    return {
        "source": source,
        "license": license_,
        "file": path.name,
        "sha256": sha256_of(path),
    }


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """Fields every card carries: training command, framework versions, commit, UTC date."""
    argv = command if command is not None else ["modelserve", *sys.argv[1:]]
    return {
        "training_command": shlex.join(argv),
        "framework": framework_versions(),
        "git_commit": git_commit(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
