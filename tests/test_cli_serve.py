"""`modelserve serve` as a real process: flags, environment variables, the README's examples."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.conftest import MODELS_DIR, REPO_ROOT
from tests.server import free_port
from tests.test_cli import MODELSERVE, run
from tests.test_metrics import scrape

EXAMPLES = REPO_ROOT / "examples"
# The README's `votes` example: the first row of the UCI file (a republican).
REPUBLICAN_VOTES = [-1, 1, -1, 1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1]


@contextmanager
def serve_process(
    *args: str, env: dict[str, str], grpc_port: int | None = 0, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[str]]:
    """`modelserve serve` with `args`; gRPC on a free port unless `grpc_port` is None (then
    the caller's args or env say). `prefix`: a command it runs under (e.g. setpriv)."""
    port_args = [] if grpc_port is None else ["--grpc-port", str(grpc_port)]
    process = subprocess.Popen(
        [*prefix, MODELSERVE, "serve", *port_args, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def exit_code(process: subprocess.Popen[str], timeout: float = 30) -> int | None:
    """`process`'s exit code once it exits; fails with its output (where the time went) when
    it is still running after `timeout` seconds."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output = process.stdout.read() if process.stdout else ""
        pytest.fail(f"still running {timeout} s after SIGTERM; its output:\n{output}")


def wait_ready(
    url: str,
    process: subprocess.Popen[str],
    timeout: float = 120,
    path: str = "/readyz",
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Until `path` answers 200 (/healthz: the server is up, whether its models are);
    `verify`: how an HTTPS server's certificate is checked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}{path}", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not ready after {timeout} s")


def test_serve_from_environment_answers_the_readme_examples() -> None:
    """Port and repository from MODELSERVE_* variables; the README's request bodies."""
    port = free_port()
    env = {"MODELSERVE_PORT": str(port), "MODELSERVE_MODEL_BASE_PATH": str(MODELS_DIR)}
    url = f"http://127.0.0.1:{port}"
    with serve_process("--host", "127.0.0.1", "--log-level", "warning", env=env) as process:
        wait_ready(url, process)
        digit = httpx.post(
            f"{url}/v1/models/digits:predict",
            content=(EXAMPLES / "digits-predict.json").read_bytes(),
        )
        assert digit.status_code == 200, digit.text
        (probabilities,) = digit.json()["predictions"]
        assert max(range(10), key=probabilities.__getitem__) == 7

        infer = httpx.post(
            f"{url}/v2/models/digits/infer", content=(EXAMPLES / "digits-infer.json").read_bytes()
        )
        assert infer.status_code == 200, infer.text
        (output,) = infer.json()["outputs"]
        assert output["shape"] == [1, 10]
        assert max(range(10), key=output["data"].__getitem__) == 7

        votes = httpx.post(
            f"{url}/v1/models/votes:predict", json={"instances": [REPUBLICAN_VOTES]}
        ).json()["predictions"][0]
        assert votes[1] > 0.5  # (democrat, republican)
        v2 = httpx.post(
            f"{url}/v2/models/votes/infer",
            json={
                "inputs": [
                    {"name": "votes", "shape": [1, 16], "datatype": "FP32"}
                    | {"data": REPUBLICAN_VOTES}
                ]
            },
        ).json()
        assert v2["outputs"][0]["data"] == pytest.approx(votes, abs=1e-6)

        # a graceful shutdown (requests drained) is a clean exit, as Kubernetes expects
        process.send_signal(signal.SIGTERM)
        assert exit_code(process) == 0


def test_serve_with_config_file_serves_only_its_models(tmp_path: Path) -> None:
    config = tmp_path / "serving.yaml"
    config.write_text(f"models:\n  - name: votes\n    base_path: {MODELS_DIR / 'votes'}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ("--host", "127.0.0.1", "--port", str(port), "--config", str(config))
    with serve_process(*args, env={}) as process:
        wait_ready(url, process)
        assert httpx.get(f"{url}/readyz").json()["models"] == {"votes": True}
        assert httpx.get(f"{url}/v1/models/digits").status_code == 404


def test_serve_rejects_a_bad_config_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  - name: votes\n    version_policy: {latest: 0}\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "version_policy" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_an_empty_repository_fails_clearly(tmp_path: Path) -> None:
    result = run("serve", "--model-base-path", str(tmp_path))
    assert result.returncode == 2
    assert "no models found" in result.stderr


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    """The pod's termination: SIGTERM while a 1.5 s REST request runs and a gRPC one waits for
    the model behind it. Both are answered, the process exits 0 (not killed by the signal),
    and the TensorFlow thread pools were sized from the settings (by default the container's
    CPU limit)."""
    from tests.test_grpc import outputs_of, predict_request
    from tests.test_metrics import export_sleepy

    export_sleepy(tmp_path / "models", "sleepy", seconds=1.5)
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  - name: sleepy\n    batching: {enabled: false}\n")
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models"),
        "MODELSERVE_GRPC_PORT": str(grpc_port),
        "MODELSERVE_DRAIN_SECONDS": "10",
        "MODELSERVE_INTRA_OP_THREADS": "1",
        "MODELSERVE_INTER_OP_THREADS": "1",
        "MODELSERVE_LOG_FORMAT": "text",
    }
    args = ("--host", "127.0.0.1", "--port", str(port), "--config", str(config))
    grpc_request = predict_request("sleepy", {"x": tf.make_tensor_proto(np.float32([3.0]))})
    with (
        serve_process(*args, grpc_port=None, env=env) as process,
        ThreadPoolExecutor(2) as pool,
        grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        wait_ready(url, process)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        rest = pool.submit(
            httpx.post, f"{url}/v1/models/sleepy:predict", json={"instances": [1.0]}, timeout=30
        )
        wait_until_running(url, "sleepy")
        over_grpc = pool.submit(stub.Predict, grpc_request, timeout=30)
        wait_until_queued(url, "sleepy", 1)  # the gRPC call, behind the running REST one
        process.send_signal(signal.SIGTERM)
        answer = rest.result()
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [2.0]}
        assert outputs_of(over_grpc.result())["y"].tolist() == [6.0]
        assert exit_code(process) == 0
        output = process.stdout.read() if process.stdout else ""
    assert "1 intra-op, 1 inter-op" in output, output


def wait_until_running(url: str, model: str, timeout: float = 10) -> None:
    """Until the model has a call in flight (`modelserve_batches_in_flight`)."""
    pattern = re.compile(rf'^modelserve_batches_in_flight\{{model="{model}",[^}}]*\}} 1', re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern.search(httpx.get(f"{url}/metrics", timeout=5).text):
            return
        time.sleep(0.02)
    pytest.fail(f"no call of {model} in flight after {timeout} s")


def wait_until_queued(url: str, model: str, requests: int, timeout: float = 10) -> None:
    """Until `requests` wait in the queue of the model's version 1 (`modelserve_queue_depth`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scrape(url).value("modelserve_queue_depth", model=model, version="1") == requests:
            return
        time.sleep(0.02)
    pytest.fail(f"not {requests} requests queued for {model} after {timeout} s")
