"""Faults through a real server: a batch failing on one odd request (retried in halves), corrupt,
unreadable and half-copied model folders (reported, isolated, retried once fixed), and hot
reload under load while a new version is copied in file by file."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.core.repository import ModelRepository
from service.core.servable import VersionState
from service.core.serving_config import ModelConfig, ServingConfig
from service.settings import Settings
from tests.saved_models import (
    X,
    _save_atomically,
    affine,
    copy_versions,
    write_config,
    write_corrupt_version,
)
from tests.server import (
    assert_no_paths,
    error_message,
    free_port,
    grpc_target,
    running_server,
    version_status,
    wait_for,
)
from tests.test_cli_serve import serve_process, wait_ready
from tests.test_metrics import Scrape, change, scrape

pytest_plugins = ["tests.gateway_fixtures"]


# Root reads files whatever their mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): as root (CI),
# the server runs without those capabilities, so mode 000 hides files from it as from any user.
WITHOUT_READ_ANYTHING = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
)


@contextmanager
def unprivileged_server(repo: Path) -> Iterator[str]:
    """`modelserve serve` of `repo` (polled every 0.2 s) as a process that permissions bind."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--model-base-path", str(repo)]
    args += ["--poll-interval", "0.2", "--log-level", "warning"]
    # one process: the repository's state is answered from the first moment (workers answer
    # 503 until the model process is up; tests/test_workers.py covers them)
    args += ["--workers", "0"]
    with serve_process(*args, env={}, prefix=WITHOUT_READ_ANYTHING) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, timeout=60, path="/healthz")
        yield url


def predict(client: httpx.Client, model: str, xs: list[float] = X) -> httpx.Response:
    return client.post(f"/v1/models/{model}:predict", json={"instances": xs})


# --- 1. a batch failing on one request is retried in halves --------------------------------

UNLUCKY = 13.0
BATCH = 8


def export_unlucky(base: Path, name: str, version: int) -> Path:
    """`x` float32 [None] -> `y` = 2x + 1, failing (InvalidArgumentError at run time) for a
    whole call when any x is UNLUCKY: one odd row fails the batch it is in."""

    class Unlucky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            check = tf.debugging.assert_none_equal(x, UNLUCKY, message="x must not be 13")
            with tf.control_dependencies([check]):
                return {"y": 2.0 * x + 1.0}

    module = Unlucky()
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


def test_one_bad_request_in_a_batch_fails_alone(tmp_path: Path) -> None:
    """Eight concurrent one-row requests fill one batch (max_batch_size 8; the 10 s delay holds
    it open until then); one is UNLUCKY. It alone gets a 400, the seven others their answers,
    after 1 + 2 * log2(8) model calls: the batch fails, then each failing half is halved."""
    export_unlucky(tmp_path / "repo", "unlucky", 1)
    config = write_config(
        tmp_path / "serving.yaml",
        [{"name": "unlucky", "batching": {"max_batch_size": BATCH, "max_batch_delay_ms": 10_000}}],
    )
    settings = Settings(model_base_path=tmp_path / "repo", config=config, poll_interval_seconds=0)
    xs = [float(i) for i in range(BATCH)]
    xs[5] = UNLUCKY
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        before = scrape(url)
        start = threading.Barrier(BATCH)

        def send(x: float) -> httpx.Response:
            start.wait(timeout=30)
            return predict(client, "unlucky", [x])

        with ThreadPoolExecutor(BATCH) as pool:
            responses = list(pool.map(send, xs))
        after = scrape(url)

    for x, response in zip(xs, responses, strict=True):
        if x == UNLUCKY:
            assert "x must not be 13" in error_message(response, 400)
        else:
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == [2 * x + 1]
    labels = {"model": "unlucky", "version": "1"}
    assert batches(before, after, labels) == {"full": 1}, "the eight requests were not one batch"
    assert change(before, after, "modelserve_batch_splits_total", **labels) == 3
    invalid = {**labels, "code": "INVALID_ARGUMENT"}
    # the batch, its second half, that half's first half, the culprit
    assert change(before, after, "modelserve_model_errors_total", **invalid) == 4
    calls = change(before, after, "modelserve_batch_duration_seconds_count", **labels)
    assert calls == 1 + 2 * 3


def batches(before: Scrape, after: Scrape, labels: dict[str, str]) -> dict[str, float]:
    """Batches of one version run between two scrapes, by dispatch reason."""
    reasons = {
        dict(series)["reason"]
        for series in after.series("modelserve_batches_total")
        if dict(series)["model"] == labels["model"]
    }
    moves = {
        reason: change(before, after, "modelserve_batches_total", **labels, reason=reason)
        for reason in reasons
    }
    return {reason: moved for reason, moved in moves.items() if moved}


# --- 2. corrupt, half-copied and unreadable model folders -----------------------------------

BROKEN = {
    "garbage": "NOT a SavedModel: saved_model.pb is garbage",
    "no_variables": "half-copied: saved_model.pb without variables/",
    "truncated": "half-copied: variables' data file cut in half",
}
DATA_FILE = Path("variables") / "variables.data-00000-of-00001"


@dataclass
class Repository:
    url: str
    root: Path
    library: Path

    def version_dir(self, model: str) -> Path:
        return self.root / "repo" / model / "1"


@pytest.fixture(scope="module")
def broken_server(
    model_library: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Repository]:
    """`good` (plus version 1) beside one model per BROKEN case, polled every 0.2 s."""
    root = tmp_path_factory.mktemp("broken")
    repo = root / "repo"
    copy_versions(model_library, repo / "good", "plus", [1])
    write_corrupt_version(repo, "garbage", 1)
    shutil.rmtree(copy_versions(model_library, repo / "no_variables", "plus", [1]) / "1/variables")
    data = copy_versions(model_library, repo / "truncated", "plus", [1]) / "1" / DATA_FILE
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    settings = Settings(model_base_path=repo, poll_interval_seconds=0.2)
    with running_server(settings, wait_ready=False) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: settled(client, ["good", *BROKEN]), timeout=60, what="loads to end")
        yield Repository(url, root, model_library)


def settled(client: httpx.Client, models: list[str]) -> bool:
    states = [version_status(client, model).get("1", {}).get("state") for model in models]
    return all(state in ("AVAILABLE", "END") for state in states)


def test_broken_versions_are_reported_and_the_others_serve(broken_server: Repository) -> None:
    with httpx.Client(base_url=broken_server.url, timeout=30) as client:
        assert predict(client, "good").json()["predictions"] == pytest.approx(affine(1))
        for model, case in BROKEN.items():
            status = version_status(client, model)["1"]
            assert status["state"] == "END", (case, status)
            assert status["status"]["error_code"] not in ("OK", ""), (case, status)
            message = status["status"]["error_message"]
            assert message.strip(), (case, status)
            assert_no_paths(message, broken_server.root)
            refused = error_message(predict(client, model), 503)
            assert_no_paths(refused, broken_server.root)
            v2_ready = client.get(f"/v2/models/{model}/ready")
            assert (v2_ready.status_code, v2_ready.json()["ready"]) == (503, False), case
        assert version_status(client, "garbage")["1"]["status"]["error_code"] == "DATA_LOSS"
        assert version_status(client, "no_variables")["1"]["status"]["error_code"] == "NOT_FOUND"
        missing = version_status(client, "no_variables")["1"]["status"]["error_message"]
        assert "no_variables/1/variables" in missing  # the relative part says what is missing
        assert client.get("/readyz").status_code == 503  # configured models lack a version
        assert client.get("/v2/models/good/ready").json()["ready"] is True

    metrics = scrape(broken_server.url)
    for model in BROKEN:
        assert metrics.value("modelserve_model_load_failures_total", model=model) >= 1
        assert metrics.value("modelserve_model_version_available", model=model, version="1") == 0
        assert metrics.value("modelserve_model_ready", model=model) == 0
    assert metrics.value("modelserve_model_load_failures_total", model="good") == 0
    assert metrics.value("modelserve_model_ready", model="good") == 1


def test_broken_versions_load_once_their_files_are_fixed(broken_server: Repository) -> None:
    """Fixed in place, as an operator would: the next scans see the files change and retry."""
    good = broken_server.library / "plus" / "1"
    for model in BROKEN:
        target = broken_server.version_dir(model)
        shutil.rmtree(target / "variables", ignore_errors=True)
        shutil.copytree(good / "variables", target / "variables")
        shutil.copy(good / "saved_model.pb", target / "saved_model.pb")
    with httpx.Client(base_url=broken_server.url, timeout=30) as client:

        def fixed() -> bool:
            statuses = [version_status(client, model)["1"] for model in BROKEN]
            return all(s["state"] == "AVAILABLE" for s in statuses)

        wait_for(fixed, timeout=60, what="the fixed versions to load")
        for model in BROKEN:
            status = version_status(client, model)["1"]["status"]
            assert status == {"error_code": "OK", "error_message": ""}, (model, status)
            assert predict(client, model).json()["predictions"] == pytest.approx(affine(1))
        assert client.get("/readyz").status_code == 200


def test_an_unreadable_version_is_reported_and_loads_once_readable(
    model_library: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_versions(model_library, repo / "good", "plus", [1])
    locked = copy_versions(model_library, repo / "locked", "plus", [1]) / "1"
    locked.chmod(0)
    try:
        with unprivileged_server(repo) as url, httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: settled(client, ["good", "locked"]), timeout=60, what="loads to end")
            status = version_status(client, "locked")["1"]
            assert status["state"] == "END", status
            assert status["status"]["error_code"] == "PERMISSION_DENIED", status
            assert_no_paths(status["status"]["error_message"], tmp_path)
            assert predict(client, "good").json()["predictions"] == pytest.approx(affine(1))
            assert client.get("/v2/models/locked/ready").json()["ready"] is False

            locked.chmod(0o755)
            wait_for(
                lambda: version_status(client, "locked")["1"]["state"] == "AVAILABLE",
                timeout=60,
                what="the version to load once readable",
            )
            assert predict(client, "locked").json()["predictions"] == pytest.approx(affine(1))
    finally:
        locked.chmod(0o755)  # so pytest can remove it


def test_an_unreadable_model_folder_keeps_serving_and_stops_no_other_model(
    model_library: Path, tmp_path: Path
) -> None:
    """A folder that cannot be listed is not a folder without versions: nothing is unloaded,
    and the other models' new versions are still found."""
    repo = tmp_path / "repo"
    locked = copy_versions(model_library, repo / "locked", "plus", [1])
    copy_versions(model_library, repo / "other", "plus", [1])
    try:
        with unprivileged_server(repo) as url, httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: settled(client, ["locked", "other"]), timeout=60, what="loads")
            locked.chmod(0)
            copy_versions(model_library, repo / "other", "plus", [2])
            wait_for(
                lambda: version_status(client, "other").get("2", {}).get("state") == "AVAILABLE",
                timeout=60,
                what="the other model's new version",
            )
            assert predict(client, "locked").json()["predictions"] == pytest.approx(affine(1))
            assert version_status(client, "locked")["1"]["state"] == "AVAILABLE"
    finally:
        locked.chmod(0o755)


def test_a_new_version_loads_once_two_scans_see_the_same_files(
    model_library: Path, tmp_path: Path
) -> None:
    """Scans driven by hand: a version folder still changing is left alone, so a copy in
    progress is not loaded half-way (nor counted as a failed load)."""
    source, folder = model_library / "plus" / "2", tmp_path / "plus"
    copy_versions(model_library, folder, "plus", [1])
    config = ServingConfig(models=[ModelConfig(name="plus", base_path=folder)], source="test")

    async def main(repository: ModelRepository) -> None:
        def versions() -> dict[int, VersionState]:
            (model,) = repository.models()
            return {v.version: v.state for v in model.versions}

        await repository.poll_once()  # the first scan loads what it finds at once
        assert set(versions()) == {1}
        (folder / "2").mkdir()
        shutil.copy(source / "saved_model.pb", folder / "2")
        await repository.poll_once()
        assert set(versions()) == {1}, "loaded at first sight"
        shutil.copytree(source / "variables", folder / "2" / "variables")
        await repository.poll_once()
        assert set(versions()) == {1}, "loaded while its files changed"
        await repository.poll_once()
        assert set(versions()) == {1, 2}, "not loaded once its files stayed the same"
        for _ in range(1200):
            if versions()[2] not in (VersionState.START, VersionState.LOADING):
                break
            await asyncio.sleep(0.05)
        assert versions()[2] == VersionState.AVAILABLE, repository.models()
        assert repository.models()[0].load_failures == 0

    with ThreadPoolExecutor(1) as executor:
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        repository = ModelRepository(
            config, poll_interval=0, inference_executor=executor, devices=cpus
        )

        async def run() -> None:
            try:
                await main(repository)
            finally:
                await repository.stop()

        asyncio.run(run())


# --- 3. hot reload under load, the new version copied in file by file ----------------------


@dataclass
class Answers:
    """What the client threads saw: (start time, "v1" | "v2" | what went wrong), in order."""

    outcomes: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, started: float, values: Any) -> None:
        outcome = f"neither version's answer: {values}"
        for version in (1, 2):
            if same_values(values, affine(version)):
                outcome = f"v{version}"
        with self.lock:
            self.outcomes.append((started, outcome))

    def fail(self, started: float, what: str) -> None:
        with self.lock:
            self.outcomes.append((started, what))

    def count(self, outcome: str) -> int:
        with self.lock:
            return sum(1 for _, seen in self.outcomes if seen == outcome)


def same_values(values: Any, expected: list[float]) -> bool:
    return (
        isinstance(values, list)
        and len(values) == len(expected)
        and all(abs(float(v) - e) < 1e-5 for v, e in zip(values, expected, strict=True))
    )


def rest_client(url: str, answers: Answers, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = predict(client, "plus")
            except httpx.HTTPError as exc:
                answers.fail(started, f"REST {type(exc).__name__}: {exc}")
                continue
            if response.status_code == 200:
                answers.add(started, response.json().get("predictions"))
            else:
                answers.fail(started, f"REST {response.status_code}: {response.text}")
            stop.wait(0.01)


def grpc_client(target: str, answers: Answers, stop: threading.Event) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "plus"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X, dtype=tf.float32))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = stub.Predict(request, timeout=30)
            except grpc.RpcError as exc:
                answers.fail(started, f"gRPC {exc.code()}: {exc.details()}")
                continue
            answers.add(started, tf.make_ndarray(response.outputs["y"]).tolist())
            stop.wait(0.01)


def copy_file_by_file(source: Path, target: Path, stall: Callable[[Path], None]) -> None:
    """Copies a version folder as a slow, non-atomic copy would: in place, file by file,
    saved_model.pb first and written in two halves, calling `stall` after each write."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != "saved_model.pb")
    for file in files:
        destination = target / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        data = file.read_bytes()
        middle = len(data) // 2
        with destination.open("wb") as out:
            out.write(data[:middle])
            out.flush()
            stall(destination)
            out.write(data[middle:])
        stall(destination)


def test_a_version_copied_in_file_by_file_under_load_swaps_without_a_failed_request(
    model_library: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1])
    settings = Settings(model_base_path=repo, poll_interval_seconds=0.2)
    answers, stop = Answers(), threading.Event()
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        threads = [
            threading.Thread(target=rest_client, args=(url, answers, stop), daemon=True),
            threading.Thread(target=rest_client, args=(url, answers, stop), daemon=True),
            threading.Thread(
                target=grpc_client, args=(grpc_target(url), answers, stop), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: answers.count("v1") >= 20, timeout=30, what="answers from v1")

            def stall(written: Path) -> None:
                # half a saved_model.pb stays as it is for several scans: long enough to be
                # taken for a finished copy, which must then not stay failed once it finishes
                time.sleep(1.0 if written.name == "saved_model.pb" else 0.05)

            copy_file_by_file(model_library / "plus" / "2", repo / "plus" / "2", stall)
            wait_for(lambda: answers.count("v2") >= 5, timeout=60, what="answers from v2")
            status = version_status(client, "plus")["2"]
            assert status["status"] == {"error_code": "OK", "error_message": ""}, status

            shutil.rmtree(repo / "plus" / "1")

            def only_v2() -> bool:
                status = version_status(client, "plus")
                return set(status) == {"2"} or (
                    status["1"]["state"] == "END" and status["2"]["state"] == "AVAILABLE"
                )

            wait_for(only_v2, timeout=30, what="version 1 to be unloaded")
            unloaded = time.monotonic()
            served = answers.count("v2")
            wait_for(lambda: answers.count("v2") >= served + 20, timeout=30, what="more answers")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

    outcomes = answers.outcomes
    failures = [outcome for _, outcome in outcomes if outcome not in ("v1", "v2")]
    assert not failures, failures[:10]
    late = [outcome for started, outcome in outcomes if started > unloaded]
    assert late and set(late) == {"v2"}, "version 1 answered after it was unloaded"
