"""`modelserve serve` exporting a missing `resnet50` on its own, offline: Keras' real ResNet50
with random weights saved to a local .h5 stands in for the ImageNet download, passed as a user
passes a local copy (`--resnet50-weights PATH`). The other models answer while it runs; /readyz
and the web page's badge go from "coming" to "ready"; failed downloads (wrong file, nothing
listening, a server stopped mid-download) leave nothing half-written, say so in one warning
line, and the other models keep serving."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from service.core.auto_export import exportable
from service.core.serving_config import ServingConfig, discover_serving_config
from service.settings import Settings
from tests.route_server import RouteServer
from tests.saved_models import export_affine
from tests.server import free_port, running_server
from tests.task_models import photo_bytes
from tests.test_web_page import DESKTOP, browser, new_tab  # noqa: F401  (the browser fixture)
from tests.test_workers import cluster, ready, wait_for
from training import resnet50

EXPORT_LOGGER = "service.core.auto_export"
PHOTO = {"file": ("street.jpg", photo_bytes("street.jpg"), "image/jpeg")}


def affine_repository(base: Path) -> Path:
    """`plus` (a tiny model) and no resnet50."""
    export_affine(base, "plus", 1)
    return base


def predict_plus(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/plus:predict", json={"instances": [1.0, 2.0]}, timeout=30)


def readyz(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    assert response.status_code == 200, response.text  # the other models serve: ready
    body: dict[str, Any] = response.json()
    return body


def files_in(folder: Path) -> list[str]:
    """Every file and folder under `folder`, hidden ones included ([] when it is absent)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- which models are exported ----------------------------------------------------------------


def test_discovery_adds_only_models_that_need_no_training(tmp_path: Path) -> None:
    repo = affine_repository(tmp_path / "models")
    names = [m.name for m in discover_serving_config(repo, {"resnet50"}).models]
    assert names == ["plus", "resnet50"]
    assert [m.name for m in discover_serving_config(repo).models] == ["plus"]
    # a base path that does not exist stays an error (a typo would otherwise get a download)
    with pytest.raises(Exception, match="no models found"):
        discover_serving_config(tmp_path / "typo", {"resnet50"})


def test_only_missing_local_models_of_jobs_without_training_are_exported(tmp_path: Path) -> None:
    config = ServingConfig(
        models=[
            {"name": "digits", "base_path": tmp_path / "digits"},  # needs training: never
            {"name": "resnet50", "base_path": tmp_path / "photos"},  # any folder name
            {"name": "plus", "base_path": tmp_path / "plus"},
        ],
        source="test",
    )
    assert [(m.name, job.name) for m, job in exportable(config)] == [("resnet50", "resnet50")]
    remote = ServingConfig(
        models=[
            {"name": "resnet50", "base_path": tmp_path / "r", "backend": {"grpc": "host:8500"}}
        ],
        source="test",
    )
    assert exportable(remote) == []  # served by a remote backend: nothing to export here
    (tmp_path / "photos" / "3").mkdir(parents=True)
    assert exportable(config) == []  # it has a version


def test_turned_off_the_model_is_not_served_and_nothing_runs(tmp_path: Path) -> None:
    repo = affine_repository(tmp_path / "models")
    with running_server(Settings(model_base_path=repo, auto_export=False)) as url:
        assert readyz(url)["models"] == {"plus": True}
        response = httpx.post(f"{url}/api/v1/images", files=PHOTO, timeout=30)
        assert response.status_code == 404
        assert "modelserve train resnet50" in response.json()["error"]
    assert files_in(repo / "resnet50") == []


# --- the export, end to end, through the model process ----------------------------------------


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keras' own ResNet50 with random weights, saved as a local weights file."""
    model = resnet50.build_model(resnet50.Weights(path=None, origin="test"), seed=3)
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.weights.h5"
    model.save_weights(path)
    return path


def export_child(marker: Path, timeout: float = 60) -> int:
    """The pid of the export process whose command line names `marker` (its model folder)."""

    def found() -> int | None:
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                command = (proc / "cmdline").read_bytes()
                if b"training.auto_export" in command and str(marker).encode() in command:
                    return int(proc.name)
        return None

    return wait_for(found, timeout, f"an export process for {marker}")


def test_the_other_models_serve_while_resnet50_is_exported_then_it_serves(
    tmp_path: Path,
    random_weights: Path,
    browser: Browser,  # noqa: F811  (the fixture imported above)
) -> None:
    repo = affine_repository(tmp_path / "models")
    env = {
        "MODELSERVE_AUTO_EXPORT": "1",
        "MODELSERVE_LOG_FORMAT": "json",
        "KERAS_HOME": str(tmp_path / "keras"),
    }
    args = ("--model-base-path", str(repo), "--resnet50-weights", str(random_weights))
    with cluster(repo, tmp_path, *args, env=env) as running:
        # Held still while the test looks, so "coming" is seen however fast the export is.
        child = export_child(repo / "resnet50")
        os.kill(child, signal.SIGSTOP)
        try:
            ready(running)  # at once: resnet50 does not hold readiness back
            check_coming(running.url)
            with contextlib.contextmanager(new_tab)(browser, running.url, DESKTOP) as tab:
                badge = tab.page.locator("#photos-status")
                expect(badge).to_have_text(re.compile(r"^coming: "))
                expect(badge).to_have_attribute("data-state", "pending")
                expect(tab.page.locator("[data-missing-model=resnet50]")).to_be_hidden()
                os.kill(child, signal.SIGCONT)
                check_exported(running.url)
                expect(badge).to_have_text("version 1 ready")  # the page refreshed it itself
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have finished
                os.kill(child, signal.SIGCONT)
        assert files_in(repo / "resnet50")[0] == "1"
        assert not [p for p in files_in(repo / "resnet50") if p.startswith(".")], "leftovers"
    messages = [line["message"] for line in running.lines() if line["logger"] == EXPORT_LOGGER]
    assert any("exporting it in the background" in m for m in messages), messages
    assert any(re.search(r"exported version 1 in [\d.]+ s", m) for m in messages), messages
    warnings = [line for line in running.lines() if line["level"] == "WARNING"]
    assert not [w for w in warnings if w["logger"] == EXPORT_LOGGER], warnings


def check_coming(url: str) -> None:
    """plus answers; resnet50 is listed as coming, and its requests get 503 saying why."""
    body = readyz(url)
    assert body["models"] == {"plus": True, "resnet50": False}
    assert "export" in body["coming"]["resnet50"]
    assert predict_plus(url).json() == {"predictions": [2.5, 3.0]}
    response = httpx.post(f"{url}/api/v1/images", files=PHOTO, timeout=30)
    assert response.status_code == 503, response.text
    assert "export" in response.json()["error"]
    assert httpx.get(f"{url}/v2/models/resnet50/ready", timeout=10).status_code != 200
    overview = httpx.get(f"{url}/api/v1/models", timeout=10).json()["models"]
    (entry,) = [m for m in overview if m["name"] == "resnet50"]
    assert entry["export"]["state"] == "coming" and entry["versions"] == []


def check_exported(url: str) -> None:
    def exported() -> dict[str, Any] | None:
        body = readyz(url)
        return body if body["models"].get("resnet50") else None

    body = wait_for(exported, 600, "resnet50 exported and loaded")
    assert "coming" not in body and "not_exported" not in body
    response = httpx.post(f"{url}/api/v1/images", files=PHOTO, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    assert predict_plus(url).status_code == 200


# --- failures: one warning line, nothing half-written, the others serve -------------------------


def exporting_server(repo: Path, source: str) -> contextlib.AbstractContextManager[str]:
    return running_server(Settings(model_base_path=repo, auto_export=True, resnet50_weights=source))


def wrong_file(tmp_path: Path) -> str:
    """A file URL of 3 MB that are not Keras' weights (downloaded, then refused by md5)."""
    path = tmp_path / "mirror" / resnet50.WEIGHTS_FILE
    path.parent.mkdir()
    path.write_bytes(os.urandom(3_000_000))
    return path.as_uri()


def nothing_listening(tmp_path: Path) -> str:
    return f"http://127.0.0.1:{free_port()}/{resnet50.WEIGHTS_FILE}"


def not_resnet50_weights(tmp_path: Path) -> str:
    path = tmp_path / "damaged.h5"
    path.write_bytes(b"not hdf5")
    return str(path)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (wrong_file, "md5"),
        (nothing_listening, "could not be reached"),
        (not_resnet50_weights, "could not load ResNet50 weights"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_failed_export_warns_once_and_leaves_nothing_behind(
    tmp_path: Path,
    keras_home: Path,
    caplog: pytest.LogCaptureFixture,
    source: Any,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger=EXPORT_LOGGER)
    repo = affine_repository(tmp_path / "models")
    with exporting_server(repo, source(tmp_path)) as url:

        def failed() -> str | None:
            return readyz(url).get("not_exported", {}).get("resnet50")

        detail = wait_for(failed, 300, "the export to fail")
        assert reason in detail
        for needed in (resnet50.WEIGHTS_FILE, resnet50.WEIGHTS_MD5, "--resnet50-weights PATH"):
            assert needed in detail
        assert predict_plus(url).json() == {"predictions": [2.5, 3.0]}
        response = httpx.post(f"{url}/api/v1/images", files=PHOTO, timeout=30)
        assert response.status_code == 503 and reason in response.json()["error"]
    records = [r for r in caplog.records if r.name == EXPORT_LOGGER]
    (warning,) = [r for r in records if r.levelno >= logging.WARNING]  # one
    line = warning.getMessage()
    assert "\n" not in line and reason in line and "MODELSERVE_AUTO_EXPORT=0" in line
    assert files_in(repo / "resnet50") == []
    assert files_in(keras_home / "models") == []  # no download, whole or partial, kept
    assert str(tmp_path) not in detail  # public: no server paths (the log has them)
    assert (str(tmp_path) in line) == (source is not nothing_listening)
    if source is wrong_file:  # the bytes were fetched (and their progress logged) first
        assert any("downloading 3.0 of 3.0 MB (100 %)" in r.getMessage() for r in records)


def test_the_page_says_why_resnet50_was_not_exported(
    tmp_path: Path,
    keras_home: Path,
    browser: Browser,  # noqa: F811  (the fixture imported above)
) -> None:
    repo = affine_repository(tmp_path / "models")
    with exporting_server(repo, nothing_listening(tmp_path)) as url:
        wait_for(lambda: "not_exported" in readyz(url), 120, "the export to fail")
        with contextlib.contextmanager(new_tab)(browser, url, DESKTOP) as tab:
            expect(tab.page.locator("#photos-status")).to_have_text("not exported")
            expect(tab.page.locator("#photos-status")).to_have_attribute("data-state", "missing")
            notice = tab.page.locator("[data-missing-model=resnet50]")
            expect(notice).to_be_visible()
            expect(notice).to_contain_text("could not be reached")
            expect(notice).to_contain_text(resnet50.WEIGHTS_MD5)


def test_a_server_stopped_mid_download_leaves_no_partial_file(
    tmp_path: Path,
    keras_home: Path,
    served: RouteServer,
) -> None:
    # 1 MB sent of the 50 MB promised, then the connection is held open
    path = f"/{resnet50.WEIGHTS_FILE}"
    stalled = served.serve(path, b"\0" * 1_000_000, missing=49_000_000, stall=True)
    repo = affine_repository(tmp_path / "models")
    with exporting_server(repo, stalled) as url:
        partial = wait_for(lambda: files_in(keras_home / "models"), 120, "the download to start")
        assert partial[0].startswith(f".{resnet50.WEIGHTS_FILE}.part-")
        coming = readyz(url)["coming"]["resnet50"]
        assert "downloading" in coming and "of 50.0 MB" in coming
    # the server stopped: its export process was told to stop, and took its partial file along
    assert files_in(keras_home / "models") == []
    assert files_in(repo / "resnet50") == []
