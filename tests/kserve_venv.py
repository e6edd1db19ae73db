"""The KServe SDK's own virtual environment (.venv-kserve, made by scripts/kserve-venv.sh, which
`make install-dev` runs; KSERVE_PYTHON names another python). The SDK pins a stack of its own and
registers the same `inference.*` protobuf names as tritonclient, so tests run it in a process of
its own with this python, never in the test process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

KSERVE_PYTHON = Path(os.environ.get("KSERVE_PYTHON", REPO_ROOT / ".venv-kserve" / "bin" / "python"))


def kserve_python(needed_for: str) -> Path:
    """KSERVE_PYTHON; a missing venv fails the test (no skip) with how to make it."""
    if not KSERVE_PYTHON.is_file():
        pytest.fail(
            f"{KSERVE_PYTHON} not found: run `make install-dev` (scripts/kserve-venv.sh creates"
            f" the venv with the KServe SDK, {needed_for})"
        )
    return KSERVE_PYTHON
