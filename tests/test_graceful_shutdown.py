"""Graceful shutdown of a real `modelserve serve` process: on SIGTERM readiness turns 503 at
once, new requests are refused with 503, admitted ones (running and queued) are answered,
and the process exits 0; past the drain time the rest are answered 503, never a bare 500."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.server import free_port
from tests.test_cli_serve import (
    exit_code,
    serve_process,
    wait_ready,
    wait_until_queued,
    wait_until_running,
)
from tests.test_metrics import export_sleepy

QUEUED = 3  # requests waiting behind the running one when SIGTERM comes


@contextmanager
def sleepy_server(
    tmp_path: Path, *, seconds: float, drain_seconds: int
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A server of one model that sleeps `seconds` per call and runs one call at a time."""
    export_sleepy(tmp_path / "models", "sleepy", seconds=seconds)
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  - name: sleepy\n    batching: {enabled: false}\n")
    port = free_port()
    env = {
        "MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models"),
        "MODELSERVE_DRAIN_SECONDS": str(drain_seconds),
        "MODELSERVE_INFERENCE_THREADS": "1",
        "MODELSERVE_LOG_FORMAT": "text",
    }
    args = ("--host", "127.0.0.1", "--port", str(port), "--config", str(config))
    with serve_process(*args, env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield url, process


def wait_until_draining(url: str, timeout: float = 10) -> None:
    """Until /readyz answers 503 "draining": the server has taken its first signal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(f"{url}/readyz", timeout=5)
        if ready.status_code == 503 and ready.json().get("status") == "draining":
            return
        time.sleep(0.02)
    pytest.fail(f"not draining {timeout} s after SIGTERM")


def predict(url: str, x: float) -> httpx.Response:
    body = {"instances": [x]}
    return httpx.post(f"{url}/v1/models/sleepy:predict", json=body, timeout=60)


def test_sigterm_turns_readiness_503_refuses_new_requests_and_answers_admitted_ones(
    tmp_path: Path,
) -> None:
    with (
        sleepy_server(tmp_path, seconds=1.0, drain_seconds=30) as (url, process),
        ThreadPoolExecutor(1 + QUEUED) as pool,
    ):
        admitted = [pool.submit(predict, url, 1.0)]
        wait_until_running(url, "sleepy")
        admitted += [pool.submit(predict, url, float(x)) for x in range(2, 2 + QUEUED)]
        wait_until_queued(url, "sleepy", QUEUED)  # in the server, behind the running one
        process.send_signal(signal.SIGTERM)

        with httpx.Client(base_url=url, timeout=10) as client:
            ready = client.get("/readyz")
            refused = client.post("/v1/models/sleepy:predict", json={"instances": [9.0]})
            v2_ready = client.get("/v2/health/ready")
            alive = client.get("/healthz")
        # at once: while the running call (1 s) is still running, let alone the queue (3 s),
        # whatever the time this machine takes to answer
        assert not any(future.done() for future in admitted)
        assert (ready.status_code, ready.json()["status"]) == (503, "draining")
        assert v2_ready.status_code == 503
        assert alive.status_code == 200  # liveness holds: a failing one means SIGKILL
        assert refused.status_code == 503
        assert "shutting down" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"

        answers = [future.result() for future in admitted]
        assert [a.status_code for a in answers] == [200] * (1 + QUEUED), [a.text for a in answers]
        assert [a.json()["predictions"] for a in answers] == [[2.0 * x] for x in range(1, 5)]
        assert exit_code(process) == 0
    with pytest.raises(httpx.ConnectError):  # and then the port is closed
        httpx.get(f"{url}/healthz", timeout=2)


@contextmanager
def sigterm_during_a_call(
    tmp_path: Path, drain_seconds: int
) -> Iterator[tuple[str, subprocess.Popen[str], Future[httpx.Response]]]:
    """A sleepy server (4 s calls) sent SIGTERM while a request runs: yields its URL, its
    process and the running request."""
    with (
        sleepy_server(tmp_path, seconds=4.0, drain_seconds=drain_seconds) as (url, process),
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(predict, url, 1.0)
        wait_until_running(url, "sleepy")
        process.send_signal(signal.SIGTERM)
        yield url, process, running


def test_requests_running_past_the_drain_time_are_answered_503(tmp_path: Path) -> None:
    with sigterm_during_a_call(tmp_path, drain_seconds=1) as (_, process, running):
        answer = running.result()
        assert answer.status_code == 503, answer.text  # not uvicorn's plain-text 500
        assert "shut down before this request finished" in answer.json()["error"]
        assert exit_code(process) == 0
        output = process.stdout.read() if process.stdout else ""
    assert "drain time (1 s) is up with 1 request(s) in flight" in output, output


def test_a_second_signal_stops_without_waiting_for_the_drain(tmp_path: Path) -> None:
    with sigterm_during_a_call(tmp_path, drain_seconds=60) as (url, process, running):
        wait_until_draining(url)  # the first signal was taken: this one is the second
        process.send_signal(signal.SIGINT)  # Ctrl-C again: don't wait 60 s
        assert running.result().status_code == 503
        assert exit_code(process) == 0
