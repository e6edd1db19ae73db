"""Session fixtures of the gateway integration tests (test_gateway_*.py).

Use from a test module with `pytest_plugins = ["tests.gateway_fixtures"]` (and do not import
this module: pytest loads it as a plugin).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.saved_models import export_library
from tests.server import running_server


@pytest.fixture(scope="session")
def model_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plus/{1,2,3}, multi/1, text/1, dtypes/1 (see saved_models.export_library), exported
    once per session; tests copy versions out of it (saved_models.copy_versions) into their
    own repositories, so a test that mutates its repository touches no other test's models."""
    return export_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="session")
def shipped_server() -> Iterator[str]:
    """The models committed in models/, served without a config file."""
    with running_server(Settings(model_base_path=MODELS_DIR), timeout=180) as url:
        yield url
