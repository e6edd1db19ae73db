"""Session fixtures of the gateway integration tests (test_gateway_*.py).

Use from a test module with `pytest_plugins = ["tests.gateway_fixtures"]` (and do not import
this module: pytest loads it as a plugin).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.saved_models import copy_versions, export_library, write_config
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


@pytest.fixture(scope="session")
def protocol_server(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The protocol tests' server (read-only): plus (versions 1 and 2, `all`, labels
    stable -> 1, canary -> 2), multi, text, dtypes, examples (batches held 100 ms)."""
    root = tmp_path_factory.mktemp("protocols")
    repo = root / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1, 2])
    for name in ("multi", "text", "dtypes", "examples"):
        copy_versions(model_library, repo / name, name)
    plus = {"name": "plus", "version_policy": "all", "version_labels": {"stable": 1, "canary": 2}}
    config = write_config(
        root / "serving.yaml",
        [
            plus,
            *({"name": name} for name in ("multi", "text", "dtypes")),
            # held batches, so concurrent classify requests share one (see test_classify_regress)
            {"name": "examples", "batching": {"max_batch_delay_ms": 100}},
        ],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings) as url:
        yield url


@pytest.fixture
def server(protocol_server: str) -> str:
    """The server `client` talks to: a test module defines its own `server` to change it."""
    return protocol_server


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client
