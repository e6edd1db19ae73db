"""`modelserve serve --workers 2`: front-end worker processes around one model process, as real
processes on loopback. Each test checks one thing that must keep working across processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.processes.supervisor import WORKER_MALLOC
from tests.saved_models import export_affine, export_text, write_config
from tests.server import free_port
from tests.test_cli import MODELSERVE
from tests.test_grpc import outputs_of, predict_request
from tests.test_metrics import Scrape, export_sleepy, scrape
from tests.test_tls import Pki, client_context, pki  # noqa: F401  (the pki fixture)

WORKERS = 2
SLEEP_SECONDS = 0.6  # one call of the `sleepy` models
KEY = "k" * 32
T = TypeVar("T")


@dataclass
class Cluster:
    """A running `modelserve serve --workers 2`."""

    process: subprocess.Popen[bytes]
    url: str
    grpc_target: str
    log: Path
    base: Path

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def children(self) -> dict[str, list[int]]:
        """The supervisor's children by kind: "model" (it has TensorFlow's runtime mapped),
        "worker" (it has not)."""
        kinds: dict[str, list[int]] = {"model": [], "worker": []}
        for pid in _children(self.process.pid):
            try:
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX":
                    continue  # exited, not yet reaped
                if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                maps = Path(f"/proc/{pid}/maps").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
            kinds["model" if "libtensorflow" in maps else "worker"].append(pid)
        return kinds


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(child) for child in text]
    return children


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"not within {timeout} s: {what}")


@contextmanager
def cluster(
    base: Path,
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    port: int | None = None,
) -> Iterator[Cluster]:
    port, grpc_port = port or free_port(), free_port()
    log = tmp / "server.log"
    command = [MODELSERVE, "serve", "--workers", str(WORKERS), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--grpc-port", str(grpc_port), *args]
    environment = {**os.environ, "MODELSERVE_POLL_INTERVAL_SECONDS": "0.5", **(env or {})}
    with log.open("wb") as output:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)
    running = Cluster(process, f"{scheme}://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log, base)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def ready(running: Cluster, timeout: float = 120, **client: Any) -> None:
    url, process = running.url, running.process

    def answered() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{running.log.read_text()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2, **client).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answered, timeout, f"{url}/readyz answers 200")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """plus (affine, version 1), sleepy (one call at a time, batches of up to 32), tight
    (one call at a time, batches of one, at most 2 queued) and text (string lengths)."""
    base = tmp_path_factory.mktemp("workers-repo")
    tmp = tmp_path_factory.mktemp("workers-run")
    export_affine(base / "models", "plus", 1, slope=0.5, offset=2.0)
    export_sleepy(base / "models", "sleepy", SLEEP_SECONDS)
    export_sleepy(base / "models", "tight", SLEEP_SECONDS)
    export_text(base / "models", "text", 1)
    config = write_config(
        base / "serving.yaml",
        [
            {"name": "plus", "base_path": str(base / "models" / "plus")},
            {
                "name": "sleepy",
                "base_path": str(base / "models" / "sleepy"),
                "batching": {"max_batch_size": 32, "max_queue_size": 64, "timeout_ms": 30000},
            },
            {
                "name": "tight",
                "base_path": str(base / "models" / "tight"),
                "batching": {"max_batch_size": 1, "max_queue_size": 2, "timeout_ms": 30000},
            },
            {"name": "text", "base_path": str(base / "models" / "text")},
        ],
    )
    env = {"MODELSERVE_ADMIN_WITHOUT_KEYS": "true", "MODELSERVE_LOG_FORMAT": "json"}
    with cluster(base, tmp, "--config", str(config), env=env) as running:
        ready(running)
        yield running


def post(url: str, path: str, body: Any, **options: Any) -> httpx.Response:
    """One request on a connection of its own (the kernel picks the worker per connection)."""
    timeout, verify = options.pop("timeout", 30), options.pop("verify", True)
    with httpx.Client(timeout=timeout, verify=verify) as client:
        return client.post(f"{url}{path}", json=body, **options)


def predict(url: str, model: str, xs: list[float], **options: Any) -> httpx.Response:
    return post(url, f"/v1/models/{model}:predict", {"instances": xs}, **options)


def test_workers_answer_every_protocol_without_tensorflow(server: Cluster) -> None:
    """REST, V2 and gRPC answers come from the model process; the workers have no TensorFlow
    runtime and stay small."""
    answer = predict(server.url, "plus", [1.0, 2.0])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [2.5, 3.0]}
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [4.0]}]}
    infer = post(server.url, "/v2/models/plus/infer", body)
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["data"] == [4.0]
    binary = _binary_infer(server.url, np.array([4.0, 6.0], np.float32))  # V2 binary tensors
    assert binary.tolist() == [4.0, 5.0]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(predict_request("plus", {"x": tf.make_tensor_proto([6.0])}), 10)
        inference = service_pb2_grpc.GRPCInferenceServiceStub(channel)  # V2 gRPC, raw contents
        request = service_pb2.ModelInferRequest(model_name="plus")
        request.inputs.add(name="x", datatype="FP32", shape=[1])
        request.raw_input_contents.append(np.array([8.0], "<f4").tobytes())
        v2_reply = inference.ModelInfer(request, timeout=10)
    assert outputs_of(reply)["y"].tolist() == [5.0]
    assert np.frombuffer(v2_reply.raw_output_contents[0], "<f4").tolist() == [6.0]
    # every worker (a connection each) reads the model process's current counts
    counts = set()
    for _ in range(2 * WORKERS):
        with httpx.Client(timeout=30) as client:
            stats = client.get(f"{server.url}/v2/models/plus/stats").json()["model_stats"][0]
        counts.add(stats["inference_count"])
    assert len(counts) == 1 and counts.pop() >= 7, counts  # rows: 2 + 1 + 2 + 1 + 1 above

    kinds = server.children()
    assert len(kinds["model"]) == 1, kinds
    assert len(kinds["worker"]) == WORKERS, kinds
    for pid in kinds["worker"]:
        assert _rss_mb(pid) < 200, f"worker {pid}: {_rss_mb(pid):.0f} MB"


def _binary_infer(url: str, x: np.ndarray) -> np.ndarray:
    """plus's y for `x` sent, and answered, as V2 binary tensors."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = httpx.post(
        f"{url}/v2/models/plus/infer",
        content=header + x.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    return np.frombuffer(response.content[length:], dtype="<f4")


def _environment_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in text.split("\0") if "=" in item)


def test_only_workers_get_the_multiprocess_metrics_and_their_malloc_settings(
    server: Cluster,
) -> None:
    """Workers write their metrics to the shared folder and get their glibc malloc settings
    (unless the user chose them); the model process (TensorFlow's threads) keeps the user's."""
    users = {name: os.environ.get(name) for name in WORKER_MALLOC}
    kinds = server.children()
    for pid in kinds["worker"]:
        environment = _environment_of(pid)
        for name, value in WORKER_MALLOC.items():
            assert environment[name] == (users[name] or value)
        assert Path(environment["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    (model,) = kinds["model"]
    environment = _environment_of(model)
    assert {name: environment.get(name) for name in WORKER_MALLOC} == users
    assert "PROMETHEUS_MULTIPROC_DIR" not in environment


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[7])


def test_a_megabyte_string_request_faults_in_no_fresh_memory(server: Cluster) -> None:
    """A 1 MB string (a photo's size) crosses worker, arena and model process without any of
    them taking fresh pages from the kernel for each request: with glibc's own thresholds a
    worker gave its heap back after every such request (454 page faults each)."""
    photo = np.random.default_rng(0).bytes(1 << 20)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(photo) + 4},
                }
            ],
            "outputs": [{"name": "length"}],
        }
    ).encode()
    body = header + len(photo).to_bytes(4, "little") + photo
    pids = [pid for pids in server.children().values() for pid in pids]
    with httpx.Client(timeout=30) as client:  # one connection: one worker serves them all

        def infer() -> None:
            answer = client.post(
                f"{server.url}/v2/models/text/infer",
                content=body,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [len(photo)]

        for _ in range(5):  # the heaps grow to what such a request needs
            infer()
        before = {pid: _minor_faults(pid) for pid in pids}
        requests = 20
        for _ in range(requests):
            infer()
        faults = {pid: (_minor_faults(pid) - before[pid]) / requests for pid in pids}
    pages_of_the_photo = len(photo) // 4096
    assert max(faults.values()) < pages_of_the_photo / 4, faults


def test_batches_form_from_every_workers_requests(server: Cluster) -> None:
    """Requests on 16 connections (spread over both workers) wait behind a running call and
    then run together: one batch in the model process, not one per worker."""
    count = 16
    with ThreadPoolExecutor(count + 1) as pool:
        first = pool.submit(predict, server.url, "sleepy", [0.0])
        time.sleep(SLEEP_SECONDS / 3)  # the first call runs; the others queue behind it
        ids = [f"batch-{i:02d}" for i in range(count)]
        answers = list(
            pool.map(
                lambda i: predict(
                    server.url, "sleepy", [float(i)], headers={"X-Request-Id": ids[i]}
                ),
                range(count),
            )
        )
    assert first.result().status_code == 200
    assert [a.json()["predictions"] for a in answers] == [[2.0 * i] for i in range(count)]

    def logged() -> list[dict[str, Any]] | None:
        lines = [line for line in server.lines() if line.get("request_id") in ids]
        return lines if len(lines) == count else None

    lines = wait_for(logged, 10, "an access log line per request")
    assert {line["process"] for line in lines} == {"modelserve-worker-0", "modelserve-worker-1"}
    # one or two batches (a request may arrive as the first batch starts), never per worker
    assert max(line["batch_size"] for line in lines) >= count // 2, lines


def test_the_queue_bound_holds_for_the_whole_server(server: Cluster) -> None:
    """`tight` takes one call and 2 queued requests: of 10 sent at once over both workers at
    most 3 are admitted (each worker with its own queue would admit up to 6)."""
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: predict(server.url, "tight", [float(i)]), range(10)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) <= 3, codes
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "max_queue_size 2" in refused.json()["error"]
    assert predict(server.url, "plus", [0.0]).status_code == 200  # still serving


def test_a_deadline_is_kept_in_the_model_process(server: Cluster) -> None:
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(predict, server.url, "tight", [1.0])
        time.sleep(SLEEP_SECONDS / 3)
        late = predict(server.url, "tight", [2.0], headers={"X-Request-Timeout": "100"})
        assert running.result().status_code == 200
    assert late.status_code == 504, late.text
    assert "deadline" in late.json()["error"]


def batching_counters(url: str, model: str) -> dict[str, Any]:
    overview = httpx.get(f"{url}/api/v1/models", timeout=10).json()
    (entry,) = [m for m in overview["models"] if m["name"] == model]
    counters: dict[str, Any] = entry["versions"][-1]["batching"]["serving_default"]
    return counters


def test_a_client_that_leaves_takes_its_request_out_of_the_queue(server: Cluster) -> None:
    """The worker tells the model process; the batcher counts it cancelled, runs nothing."""
    before = batching_counters(server.url, "tight")
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(predict, server.url, "tight", [1.0])
        time.sleep(SLEEP_SECONDS / 3)
        with pytest.raises(httpx.ReadTimeout):
            predict(server.url, "tight", [2.0], timeout=SLEEP_SECONDS / 3)
        assert running.result().status_code == 200

    def cancelled() -> bool:
        time.sleep(0.2)  # the catalog is sent every 0.2 s
        return batching_counters(server.url, "tight")["cancelled"] == before["cancelled"] + 1

    wait_for(cancelled, 5, "the request counted cancelled")


def test_metrics_are_one_view_of_every_process(server: Cluster) -> None:
    """Requests counted by whichever worker took them add up; the model process's families
    (batches, versions, build) appear once, next to the workers'."""
    before = scrape(server.url)
    for i in range(12):
        assert predict(server.url, "plus", [float(i)]).status_code == 200
    after = scrape(server.url)  # Scrape.parse asserts that no family or series is repeated
    labels = {"model": "plus", "protocol": "tfserving_rest", "route": "/v1/models/{model_method}"}

    def total(scraped: Scrape) -> float:
        return sum(
            value
            for key, value in scraped.series("modelserve_requests_total").items()
            if labels.items() <= dict(key).items() and dict(key)["code"] == "200"
        )

    assert total(after) - total(before) == 12
    assert after.value("modelserve_model_version_available", model="plus", version="1") == 1
    assert "modelserve_build_info" in after.families
    assert "modelserve_batch_duration_seconds" in after.families
    assert "process_resident_memory_bytes" in after.families  # the model process's


def test_admin_and_hot_reload_reach_the_model_process(server: Cluster) -> None:
    """A new version appears through the repository's polling; unload and load go through
    whichever worker takes the call, and every worker sees the result."""
    export_affine(server.base / "models", "plus", 2, slope=0.5, offset=10.0)

    def serves_version_2() -> bool:
        answer = predict(server.url, "plus", [2.0])
        return answer.status_code == 200 and answer.json() == {"predictions": [11.0]}

    wait_for(serves_version_2, 30, "version 2 answering")
    unloaded = post(server.url, "/admin/models/plus/unload", None)
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["unloaded_by_admin"] is True
    for _ in range(6):  # both workers refuse it now
        refused = predict(server.url, "plus", [2.0])
        assert refused.status_code == 503 and "unloaded by an admin" in refused.json()["error"]
    assert post(server.url, "/admin/models/plus/load", None).status_code == 200
    wait_for(serves_version_2, 30, "plus serving again")
    shutil.rmtree(server.base / "models" / "plus" / "2")
    wait_for(lambda: predict(server.url, "plus", [2.0]).json() == {"predictions": [3.0]}, 30, "v1")


def test_a_worker_that_dies_is_replaced(server: Cluster) -> None:
    (victim, *_) = server.children()["worker"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        workers = server.children()["worker"]
        return len(workers) == WORKERS and victim not in workers

    wait_for(replaced, 60, "a new worker")
    ready(server)
    for i in range(8):
        assert predict(server.url, "plus", [float(i)]).status_code == 200


def test_a_model_process_that_dies_makes_the_server_unready_until_restarted(
    server: Cluster,
) -> None:
    (victim,) = server.children()["model"]
    os.kill(victim, signal.SIGKILL)

    def unready() -> bool:
        return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 503

    wait_for(unready, 10, "/readyz 503")
    refused = predict(server.url, "plus", [1.0])
    assert refused.status_code == 503, refused.text
    # the workers' own metrics are still scraped meanwhile
    assert "modelserve_requests_total" in scrape(server.url).text
    ready(server)  # restarted with its models
    (restarted,) = server.children()["model"]
    assert restarted != victim
    for i in range(8):
        assert predict(server.url, "plus", [float(i)]).json() == {"predictions": [0.5 * i + 2]}


def test_sigterm_drains_every_worker_then_exits_0(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Requests already accepted, by any worker, are answered; then the server exits 0."""
    export_sleepy(tmp_path / "models", "sleepy", 1.0)
    env = {"MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models"), "MODELSERVE_LOG_FORMAT": "json"}
    with cluster(tmp_path, tmp_path_factory.mktemp("drain"), env=env) as running:
        ready(running)
        with ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(predict, running.url, "sleepy", [float(i)]) for i in range(6)]
            time.sleep(0.3)
            running.process.send_signal(signal.SIGTERM)
            results = [answer.result() for answer in answers]
        assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
        assert running.process.wait(timeout=60) == 0


def test_every_worker_serves_tls_and_checks_api_keys(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,  # noqa: F811
) -> None:
    export_affine(tmp_path / "models", "plus", 1, slope=0.5, offset=2.0)
    tls = ("--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key))
    env = {"MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models"), "MODELSERVE_API_KEYS": KEY}
    context = client_context(pki)
    with cluster(
        tmp_path, tmp_path_factory.mktemp("tls"), *tls, env=env, scheme="https"
    ) as running:
        ready(running, verify=context)
        for _ in range(8):  # new connections: both workers
            bare = predict(running.url, "plus", [1.0], verify=context)
            assert bare.status_code == 401, bare.text
            keyed = predict(running.url, "plus", [1.0], verify=context, headers={"X-API-Key": KEY})
            assert keyed.json() == {"predictions": [2.5]}
        with pytest.raises(httpx.TransportError):
            httpx.get(running.url.replace("https", "http") + "/healthz", timeout=5)
        credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        with grpc.secure_channel(running.grpc_target, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_request("plus", {"x": tf.make_tensor_proto(np.float32([2.0]))})
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, 10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.Predict(request, 10, metadata=[("x-api-key", KEY)])
            assert outputs_of(reply)["y"].tolist() == [3.0]


def test_a_worker_that_cannot_start_stops_the_server_with_an_error(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A port held by another program: the workers cannot listen, and rather than restart them
    forever the server exits 1, saying why."""
    export_affine(tmp_path / "models", "plus", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models")}
        with cluster(tmp_path, tmp_path_factory.mktemp("taken"), env=env, port=port) as running:
            assert running.process.wait(timeout=120) == 1
    log = running.log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "times in a row within 10 s of its start" in log
