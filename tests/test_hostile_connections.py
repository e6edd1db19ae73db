"""Hostile and broken clients: oversized or endless headers, idle and stalled connections,
too many connections, clients that vanish mid-body, odd version folders, symlinked versions
and bursts of gRPC calls. Raw sockets where an HTTP client would be too polite.

Timings are compared with generous bounds far from the broken behaviour (a frozen event loop
took seconds; a connection that is never timed out stays open for good), never with
thresholds tuned on an idle machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.core.layout import MAX_VERSION, existing_versions
from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.server import free_port, grpc_target, running_server, wait_for
from tests.test_cli import MODELSERVE
from tests.test_metrics import Scrape, scrape

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
PREDICT = "/v1/models/votes:predict"
PREDICT_ROUTE = "/v1/models/{model}"  # the route template the metrics label it with
VOTES = {"instances": [[0.0] * 16]}
SHIPPED_VOTES = MODELS_DIR / "votes" / str(existing_versions(MODELS_DIR / "votes")[-1])


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def votes_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    shutil.copytree(SHIPPED_VOTES, repo / "votes" / "1")
    return repo


@pytest.fixture(scope="module")
def server(votes_repo: Path) -> Iterator[str]:
    """Default limits, except short header and body timeouts."""
    settings = Settings(
        model_base_path=votes_repo,
        poll_interval_seconds=0,
        header_timeout_seconds=HEADER_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
    )
    with running_server(settings) as url:
        yield url


class LogRecords(logging.Handler):
    """Every record of the server in this process: root, and uvicorn's (which do not reach
    the root logger under uvicorn's default logging config)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [
            f"{r.name} {r.levelname}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]


@pytest.fixture
def server_log() -> Iterator[LogRecords]:
    handler = LogRecords()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def connect(url: str, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b'' if it sends nothing)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def json_error(response: bytes) -> str:
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert isinstance(body["error"], str) and body["error"], body
    message: str = body["error"]
    return message


def healthz_seconds(url: str) -> float:
    started = time.perf_counter()
    response = httpx.get(f"{url}/healthz", timeout=60)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def refused(metrics: Scrape, reason: str) -> float:
    return metrics.value("modelserve_http_refused_total", reason=reason)


def requests_by_code(metrics: Scrape) -> Counter[str]:
    counts: Counter[str] = Counter()
    for labels, value in metrics.series("modelserve_requests_total").items():
        counts[dict(labels)["code"]] += int(value)
    return counts


# --- headers ----------------------------------------------------------------------------------


def test_headers_over_the_byte_limit_get_431_before_any_other_work(server: str) -> None:
    """One byte over the default 64 KiB (request line and headers together): 431 with an
    {"error"} body, though the request carries no key and names no route."""
    before = scrape(server)
    start = b"GET /v1/models/votes HTTP/1.1\r\nHost: x\r\nX-Big: "
    request = start + b"a" * (Settings().max_header_bytes + 1 - len(start))
    with connect(server) as sock:
        sock.sendall(request)
        response = read_response(sock)
    assert status_of(response) == 431, response[:300]
    assert "byte limit" in json_error(response)
    assert refused(scrape(server), "headers_too_large") - refused(before, "headers_too_large") == 1


def test_too_many_headers_get_431(server: str) -> None:
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(Settings().max_header_count + 1))
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        response = read_response(sock)
    assert status_of(response) == 431, response[:300]
    assert "headers" in json_error(response)
    with connect(server) as sock:  # as many as allowed (Host and Connection included) is fine
        allowed = b"".join(b"X-H%d: 1\r\n" % i for i in range(Settings().max_header_count - 2))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + allowed)
        sock.sendall(b"\r\n")
        assert status_of(read_response(sock)) == 200


def _send_endless_header(url: str, budget: int, outcome: dict[str, object]) -> None:
    """Sends one header without end, up to `budget` bytes; notes whether the server cut the
    connection off first, and after how many bytes."""
    sent = 0
    chunk = b"a" * 65536
    try:
        with connect(url) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < budget:
                sock.sendall(chunk)
                sent += len(chunk)
            outcome["cut_off"] = False
    except OSError:  # reset or broken pipe: the server closed the connection
        outcome["cut_off"] = True
    outcome["sent"] = sent


def test_endless_headers_are_cut_off_and_healthz_keeps_answering(server: str) -> None:
    """Eight clients each streaming a header of up to 32 MB at once (a 100 MB one froze the
    server for seconds): the server closes each connection once the limit is passed, and
    /healthz answers throughout, about as fast as before."""
    baseline = max(healthz_seconds(server) for _ in range(5))
    budget = 32 * 1024 * 1024
    outcomes: list[dict[str, object]] = [{} for _ in range(8)]
    senders = [
        threading.Thread(target=_send_endless_header, args=(server, budget, o)) for o in outcomes
    ]
    for sender in senders:
        sender.start()
    latencies = []
    while any(s.is_alive() for s in senders):
        latencies.append(healthz_seconds(server))
        time.sleep(0.02)
    for sender in senders:
        sender.join()
    # closed by the server before the whole header went out (what was sent before that is
    # what the socket buffers took: not a figure to pin down)
    assert all(o["cut_off"] for o in outcomes), outcomes
    # generous: the broken server answered nothing for seconds
    assert max(latencies, default=0.0) < max(5.0, 20 * baseline), (latencies, baseline)


# --- idle, slow and stalled connections --------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: str,
) -> None:
    before = scrape(server)
    with connect(server, timeout=HEADER_TIMEOUT + 30) as sock:
        started = time.monotonic()
        assert read_response(sock) == b""  # closed, without an answer to no request
        waited = time.monotonic() - started
    assert HEADER_TIMEOUT * 0.5 <= waited < HEADER_TIMEOUT + 20, waited
    assert refused(scrape(server), "idle_timeout") - refused(before, "idle_timeout") >= 1


def test_headers_trickling_in_get_408_at_the_header_timeout(server: str) -> None:
    """A slow client sending a byte every 0.2 s is still answered 408 once the header time is
    up: the timeout bounds the whole head, not the pause between bytes."""
    with connect(server, timeout=HEADER_TIMEOUT + 30) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            while time.monotonic() - started < HEADER_TIMEOUT + 20:
                sock.sendall(b"X")
                answered, _, _ = select.select([sock], [], [], 0.2)
                if answered:
                    break
        except OSError:  # closed while sending: the answer is still to be read
            pass
        response = read_response(sock)
        waited = time.monotonic() - started
    assert status_of(response) == 408, response[:300]
    assert "within" in json_error(response)
    assert waited < HEADER_TIMEOUT + 20, waited


def test_a_stalled_body_is_closed_after_the_body_timeout_and_counted_client_gone(
    server: str,
) -> None:
    before = scrape(server)
    with connect(server, timeout=BODY_TIMEOUT + 30) as sock:
        started = time.monotonic()
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        sock.sendall(b'{"instanc')
        assert read_response(sock) == b""  # closed: there is nobody to answer
        waited = time.monotonic() - started
    assert BODY_TIMEOUT * 0.5 <= waited < BODY_TIMEOUT + 20, waited

    def counted() -> Scrape | None:
        after = scrape(server)
        return after if refused(after, "body_timeout") > refused(before, "body_timeout") else None

    after = wait_for(counted, timeout=30, what="the body timeout counted")
    gone = requests_by_code(after)["499"] - requests_by_code(before)["499"]
    assert gone == 1, requests_by_code(after)


def test_connections_beyond_the_cap_get_503(votes_repo: Path) -> None:
    settings = Settings(model_base_path=votes_repo, poll_interval_seconds=0, max_connections=4)
    with running_server(settings) as url:
        held = [connect(url) for _ in range(4)]
        try:
            with connect(url) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                response = read_response(sock)
            assert status_of(response) == 503, response[:300]
            assert b"retry-after: 1" in response.lower()
            assert "connections" in json_error(response)
        finally:
            for sock in held:
                sock.close()
        # once they are gone, the server answers again
        wait_for(
            lambda: httpx.get(f"{url}/healthz").status_code == 200,
            timeout=30,
            what="/healthz once the held connections closed",
        )
        assert refused(scrape(url), "too_many_connections") >= 1


# --- clients that go away mid-request ----------------------------------------------------------


def _vanish_mid_body(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        sock.sendall(b'{"instanc')  # 10 of the 100 bytes, then close


def test_clients_gone_mid_body_are_client_gone_never_500_nor_tracebacks(
    server: str, server_log: LogRecords
) -> None:
    before = scrape(server)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: _vanish_mid_body(server), range(200)))

    def all_counted() -> Scrape | None:
        after = scrape(server)
        codes = requests_by_code(after) - requests_by_code(before)
        return after if codes["499"] + codes["500"] >= 200 else None

    after = wait_for(all_counted, timeout=60, what="200 vanished clients counted")
    codes = requests_by_code(after) - requests_by_code(before)
    assert codes["500"] == 0, codes
    assert codes["499"] == 200, codes
    gone = after.value("modelserve_requests_rejected_total", model="votes", reason="client_gone")
    gone_before = before.samples.get(
        (
            "modelserve_requests_rejected_total",
            frozenset({"model": "votes", "reason": "client_gone"}.items()),
        ),
        0.0,
    )
    assert gone - gone_before == 200
    assert server_log.errors() == []
    assert httpx.post(f"{server}{PREDICT}", json=VOTES).status_code == 200


def test_the_cli_server_logs_no_error_for_clients_gone_and_answers_431(tmp_path: Path) -> None:
    """`modelserve serve` (its own uvicorn config and JSON log): 200 clients vanishing
    mid-body are 499s in the metrics and one INFO access line each at most, with no ERROR line
    and no traceback; an oversized header is a 431 there too."""
    repo = tmp_path / "repo"
    shutil.copytree(SHIPPED_VOTES, repo / "votes" / "1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "server.log"
    env = {
        **os.environ,
        "MODELSERVE_MODEL_BASE_PATH": str(repo),
        "MODELSERVE_PORT": str(port),
        "MODELSERVE_GRPC_PORT": str(free_port()),
        "MODELSERVE_HOST": "127.0.0.1",
        "MODELSERVE_LOG_LEVEL": "info",
        "MODELSERVE_LOG_FORMAT": "json",
    }
    with log_file.open("w") as output:
        process = subprocess.Popen(
            [MODELSERVE, "serve"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_for(
                lambda: _ready(url, process),
                timeout=120,
                what="the server ready",
                interval=0.3,
            )
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: _vanish_mid_body(url), range(200)))

            def all_counted() -> Counter[str] | None:
                codes = requests_by_code(scrape(url))
                return codes if codes["499"] + codes["500"] >= 200 else None

            codes = wait_for(all_counted, timeout=60, what="200 vanished clients counted")
            assert codes["500"] == 0, codes
            assert codes["499"] == 200, codes
            _check_log(log_file)
            with connect(url) as sock:
                start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                sock.sendall(start + b"a" * (Settings().max_header_bytes + 1 - len(start)))
                assert status_of(read_response(sock)) == 431
        finally:
            process.terminate()
            process.wait(timeout=60)


def _check_log(log_file: Path) -> None:
    """No ERROR line and no traceback; the vanished clients' access lines at INFO, one each."""
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    problems = [
        line for line in lines if line["level"] in ("error", "critical") or "exception" in line
    ]
    assert problems == [], problems[:3]
    assert "Traceback" not in text
    access_499 = [line for line in lines if line.get("status") == 499]
    assert len(access_499) == 200
    assert all(line["level"] == "info" for line in access_499)


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"the server exited with {process.returncode}"
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# --- version folders ---------------------------------------------------------------------------


ODD_NAMES = ("99999999999999999999", "01", "1.0", "+1", " 1", str(MAX_VERSION + 1))


def _overview(url: str, model: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/models")
    assert response.status_code == 200, response.text
    (entry,) = [m for m in response.json()["models"] if m["name"] == model]
    assert isinstance(entry, dict)
    return entry


def _grpc_status(url: str, model: str) -> list[int]:
    with grpc.insecure_channel(grpc_target(url)) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        answer = stub.GetModelStatus(request, timeout=30)
    return [v.version for v in answer.model_version_status]


def test_version_folders_that_are_no_plain_int64_are_ignored_with_a_reason(
    tmp_path: Path, server_log: LogRecords
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SHIPPED_VOTES, repo / "votes" / "1")
    for name in ODD_NAMES:  # each a complete, loadable copy of the model
        shutil.copytree(SHIPPED_VOTES, repo / "votes" / name)
    with running_server(Settings(model_base_path=repo, poll_interval_seconds=0)) as url:
        entry = _overview(url, "votes")
        assert [v["version"] for v in entry["versions"]] == [1], entry
        ignored = entry["ignored_folders"]
        assert isinstance(ignored, dict)
        assert set(ignored) == set(ODD_NAMES), ignored
        assert "int64" in ignored["99999999999999999999"]
        assert "plain version" in ignored["01"]
        assert _grpc_status(url, "votes") == [1]
        status = httpx.get(f"{url}/v1/models/votes")
        assert status.status_code == 200, status.text
        assert httpx.get(f"{url}/api/v1/models").status_code == 200
        answer = httpx.post(f"{url}{PREDICT}", json=VOTES)
        assert answer.status_code == 200, answer.text
    warned = " ".join(r.getMessage() for r in server_log.records if r.levelno >= logging.WARNING)
    assert "99999999999999999999" in warned and "int64" in warned


def test_a_symlinked_version_outside_the_base_path_is_followed_only_when_allowed(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "elsewhere" / "votes-copy"
    shutil.copytree(SHIPPED_VOTES, outside)
    repo = tmp_path / "repo"
    shutil.copytree(SHIPPED_VOTES, repo / "votes" / "1")
    (repo / "votes" / "2").symlink_to(outside, target_is_directory=True)
    settings = Settings(model_base_path=repo, poll_interval_seconds=0)
    with running_server(settings) as url:
        entry = _overview(url, "votes")
        assert [v["version"] for v in entry["versions"]] == [1], entry
        assert "symbolic link" in entry["ignored_folders"]["2"]
        assert _grpc_status(url, "votes") == [1]
    allowed = settings.model_copy(update={"follow_version_symlinks": True})
    with running_server(allowed) as url:
        entry = _overview(url, "votes")
        assert [v["version"] for v in entry["versions"]] == [2], entry
        assert entry["ignored_folders"] == {}
        assert _grpc_status(url, "votes") == [2]


# --- gRPC --------------------------------------------------------------------------------------


def _predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "votes"
    request.inputs["votes"].CopyFrom(tf.make_tensor_proto([[0.0] * 16], dtype=tf.float32))
    return request


def test_grpc_calls_beyond_the_limit_get_resource_exhausted_with_a_detail(
    votes_repo: Path,
) -> None:
    settings = Settings(
        model_base_path=votes_repo, poll_interval_seconds=0, grpc_max_concurrent_rpcs=3
    )

    async def calls(target: str) -> tuple[grpc.StatusCode, str, int, int]:
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(3)]
            for watch in watches:  # three calls held open: the limit
                await watch.read()
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                await stub.Predict(_predict_request(), timeout=30)
                refused = (grpc.StatusCode.OK, "")
            except grpc.aio.AioRpcError as exc:
                refused = (exc.code(), exc.details() or "")
            retries = 0
            for watch in watches:
                watch.cancel()
            # answered again once the server has seen the held calls end, however long a busy
            # machine takes: until then each try is one more refusal, which is counted too
            again = time.monotonic() + 30
            while True:
                try:
                    answer = await stub.Predict(_predict_request(), timeout=30)
                    return (*refused, len(answer.outputs), retries)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > again:
                        raise
                    retries += 1
                await asyncio.sleep(0.02)

    with running_server(settings) as url:
        code, detail, outputs, retries = asyncio.run(calls(grpc_target(url)))
        counted = scrape(url).value("modelserve_grpc_refused_total", reason="concurrency")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, detail)
    assert "3 calls at once" in detail
    assert outputs == 1  # answered again once the held calls ended
    assert counted == 1 + retries  # every refusal counted, once


def test_a_burst_of_grpc_calls_on_one_channel_ends_none_cancelled(server: str) -> None:
    """2,000 concurrent Predict calls on one channel: each is answered, or refused with a
    status that says why; none ends CANCELLED without a word (gRPC core's queue of calls not
    yet taken dropped some at random past 1,000)."""

    async def burst(target: str) -> Counter[tuple[str, bool]]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = _predict_request()

            async def one() -> tuple[str, bool]:
                try:
                    await stub.Predict(request, timeout=120)
                except grpc.aio.AioRpcError as exc:
                    detail = exc.details() or ""
                    return exc.code().name, bool(detail) and detail != exc.code().name
                return "OK", True

            return Counter(await asyncio.gather(*(one() for _ in range(2000))))

    outcomes = asyncio.run(burst(grpc_target(server)))
    assert set(outcomes) <= {("OK", True), ("RESOURCE_EXHAUSTED", True)}, outcomes
