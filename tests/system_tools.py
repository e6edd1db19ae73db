"""System programs some tests run that pip cannot install. `make test` installs them with
apt-get where it can (scripts/system-packages.sh); where it could not, each test that needs one
fails (never skips) with one line naming what to install."""

from __future__ import annotations

import shutil

import pytest


def require_program(program: str, *, package: str, needed_for: str) -> str:
    """The path of `program` on PATH; a one-line test failure naming the package otherwise."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"{program} not found: {needed_for} needs it. Install the system package "
            f"`{package}` (Debian: apt-get install {package}); `make test` does so where it "
            "can (scripts/system-packages.sh)",
            pytrace=False,
        )
    return path
