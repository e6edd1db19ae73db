"""The model repository behind the HTTP API: version policies and labels, hot reload of new and
removed versions under load, corrupt versions, and readiness before the first version exists."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests import saved_models
from tests.saved_models import OFFSETS, SLOPE, X, affine, copy_versions, write_config
from tests.server import (
    available_versions,
    error_message,
    running_server,
    version_status,
    wait_for,
)

pytest_plugins = ["tests.gateway_fixtures"]


def predictions(client: httpx.Client, prefix: str) -> list[float]:
    response = client.post(f"{prefix}:predict", json={"instances": X})
    assert response.status_code == 200, f"{prefix}: {response.status_code} {response.text}"
    values: list[float] = response.json()["predictions"]
    return values


def same_values(actual: Any, expected: list[float]) -> bool:
    return (
        isinstance(actual, list)
        and len(actual) == len(expected)
        and all(
            isinstance(a, int | float) and abs(a - e) < 1e-5
            for a, e in zip(actual, expected, strict=True)
        )
    )


# --- version policies, labels and a corrupt version: one server -------------------------------


@pytest.fixture(scope="module")
def server(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every model is a copy of `plus` (version v answers affine(v)):

    - latest2:  versions 1, 2, 3, `latest: 2`, base_path relative to the config file;
    - only1:    versions 1, 2, 3, `specific: [1]`, absolute base_path;
    - labelled: versions 1, 2, 3, `all`, labels stable -> 1, canary -> 3, default base_path;
    - broken:   version 1 good, version 2 corrupt, `latest: 2`;
    - unlisted: in the model base path but not in the config file.
    """
    root = tmp_path_factory.mktemp("policies")
    repo = root / "repo"
    conf = root / "conf"
    copy_versions(model_library, conf / "rel" / "latest2", "plus")
    copy_versions(model_library, root / "elsewhere" / "only1", "plus")
    copy_versions(model_library, repo / "labelled", "plus")
    copy_versions(model_library, repo / "broken", "plus", [1])
    saved_models.write_corrupt_version(repo, "broken", 2)
    copy_versions(model_library, repo / "unlisted", "plus", [1])
    config = write_config(
        conf / "serving.yaml",
        [
            {"name": "latest2", "base_path": "rel/latest2", "version_policy": {"latest": 2}},
            {
                "name": "only1",
                "base_path": str(root / "elsewhere" / "only1"),
                "version_policy": {"specific": [1]},
            },
            {
                "name": "labelled",
                "version_policy": "all",
                "version_labels": {"stable": 1, "canary": 3},
            },
            {"name": "broken", "version_policy": {"latest": 2}},
        ],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings) as url:
        yield url


def test_latest_two_serves_the_two_newest_versions(client: httpx.Client) -> None:
    assert available_versions(client, "latest2") == {"2", "3"}
    assert predictions(client, "/v1/models/latest2") == pytest.approx(affine(3))
    assert predictions(client, "/v1/models/latest2/versions/3") == pytest.approx(affine(3))
    assert predictions(client, "/v1/models/latest2/versions/2") == pytest.approx(affine(2))
    response = client.post("/v1/models/latest2/versions/1:predict", json={"instances": X})
    error_message(response, 404)


def test_specific_serves_only_the_listed_versions(client: httpx.Client) -> None:
    assert available_versions(client, "only1") == {"1"}
    assert predictions(client, "/v1/models/only1") == pytest.approx(affine(1))
    for version in (2, 3):
        response = client.post(
            f"/v1/models/only1/versions/{version}:predict", json={"instances": X}
        )
        error_message(response, 404)


def test_labels_route_to_their_versions(client: httpx.Client) -> None:
    assert available_versions(client, "labelled") == {"1", "2", "3"}
    assert predictions(client, "/v1/models/labelled") == pytest.approx(affine(3))
    assert predictions(client, "/v1/models/labelled/versions/2") == pytest.approx(affine(2))
    assert predictions(client, "/v1/models/labelled/labels/stable") == pytest.approx(affine(1))
    assert predictions(client, "/v1/models/labelled/labels/canary") == pytest.approx(affine(3))
    status = client.get("/v1/models/labelled/labels/stable").json()["model_version_status"]
    assert [entry["version"] for entry in status] == ["1"]
    error_message(
        client.post("/v1/models/labelled/labels/beta:predict", json={"instances": X}), 404
    )


def test_v2_infer_routes_to_versions_too(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": X}]}
    default = client.post("/v2/models/latest2/infer", json=body)
    assert default.status_code == 200, default.text
    assert default.json()["model_version"] == "3"
    assert default.json()["outputs"][0]["data"] == pytest.approx(affine(3))
    error_message(client.post("/v2/models/latest2/versions/1/infer", json=body), 404)


def test_a_corrupt_version_is_reported_and_the_good_one_keeps_serving(
    client: httpx.Client,
) -> None:
    status = version_status(client, "broken")
    assert status["1"]["state"] == "AVAILABLE"
    assert status["1"]["status"] == {"error_code": "OK", "error_message": ""}
    assert status["2"]["state"] == "END"
    assert status["2"]["status"]["error_code"] != "OK"
    assert status["2"]["status"]["error_message"].strip()
    assert predictions(client, "/v1/models/broken") == pytest.approx(affine(1))
    # the other models are unaffected, and the server is ready: every model has a version
    assert predictions(client, "/v1/models/labelled") == pytest.approx(affine(3))
    assert client.get("/readyz").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_with_a_config_file_only_the_configured_models_are_served(client: httpx.Client) -> None:
    error_message(client.get("/v1/models/unlisted"), 404)
    error_message(client.post("/v1/models/unlisted:predict", json={"instances": X}), 404)


# --- hot reload under load --------------------------------------------------------------------


def test_new_and_removed_versions_are_picked_up_without_failing_a_request(
    model_library: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1])
    settings = Settings(model_base_path=repo, poll_interval_seconds=0.2)
    v1, v2 = affine(1), affine(2)
    # per client thread, in order: "v1", "v2" or a description of what went wrong
    outcomes: list[list[str]] = [[], []]
    stop = threading.Event()

    def send_predictions(url: str, log: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/models/plus:predict", json={"instances": X})
                except httpx.HTTPError as exc:
                    log.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    log.append(f"{response.status_code}: {response.text}")
                else:
                    values = response.json().get("predictions")
                    if same_values(values, v1):
                        log.append("v1")
                    elif same_values(values, v2):
                        log.append("v2")
                    else:
                        log.append(f"neither version's answer: {values}")
                stop.wait(0.02)

    def count(outcome: str) -> int:
        return sum(log.count(outcome) for log in outcomes)

    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        threads = [
            threading.Thread(target=send_predictions, args=(url, log), daemon=True)
            for log in outcomes
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: count("v1") >= 10, timeout=20, what="answers from version 1")

            saved_models.export_affine(repo, "plus", 2, slope=SLOPE, offset=OFFSETS[2])
            wait_for(lambda: count("v2") >= 1, timeout=20, what="answers from version 2")

            shutil.rmtree(repo / "plus" / "1")

            def only_version_2_available() -> dict[str, Any] | None:
                status = version_status(client, "plus")
                gone = all(
                    entry["state"] == "END" and entry["status"]["error_code"] == "OK"
                    for version, entry in status.items()
                    if version != "2"
                )
                return status if gone and status.get("2", {}).get("state") == "AVAILABLE" else None

            wait_for(only_version_2_available, timeout=20, what="version 1 to be unloaded")
            error_message(
                client.post("/v1/models/plus/versions/1:predict", json={"instances": X}), 404
            )
            served = count("v2")
            wait_for(lambda: count("v2") >= served + 20, timeout=20, what="more answers")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

    failures = [outcome for log in outcomes for outcome in log if outcome not in ("v1", "v2")]
    assert not failures, failures[:10]
    for log in outcomes:
        # each thread sends one request at a time: once version 2 answered, it is the highest
        # available version for every later request of that thread
        assert "v2" in log, log
        assert "v1" not in log[log.index("v2") :], log


# --- readiness before the first version exists ------------------------------------------------


def test_not_ready_until_every_configured_model_has_a_version(
    model_library: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1])
    (tmp_path / "late").mkdir()
    config = write_config(
        tmp_path / "serving.yaml",
        [{"name": "plus"}, {"name": "late", "base_path": str(tmp_path / "late")}],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0.2)
    with (
        running_server(settings, wait_ready=False) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert client.get("/healthz").status_code == 200  # at once, while models load
        assert client.get("/readyz").status_code == 503

        def plus_available() -> bool:
            response = client.get("/v1/models/plus")
            if response.status_code != 200:
                return False
            states = [e["state"] for e in response.json()["model_version_status"]]
            return "AVAILABLE" in states

        wait_for(plus_available, timeout=60, what="plus to load")
        assert client.get("/readyz").status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/healthz").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        error_message(client.post("/v1/models/late:predict", json={"instances": X}), 503)

        saved_models.export_affine(tmp_path, "late", 1, slope=SLOPE, offset=OFFSETS[1])
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="/readyz 200")
        assert client.get("/v2/health/ready").status_code == 200
        assert predictions(client, "/v1/models/late") == pytest.approx(affine(1))
