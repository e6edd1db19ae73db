"""A real gateway on a free loopback port, served by uvicorn in a thread of the test process.

with running_server(Settings(model_base_path=repo)) as url:
    httpx.get(f"{url}/v1/models/plus")
    grpc.insecure_channel(grpc_target(url))  # its gRPC server, on a free loopback port too
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from service.http.app import asgi_app
from service.http.limits import uvicorn_config
from service.metrics import Metrics
from service.server import ModelServer
from service.settings import Settings

T = TypeVar("T")

_SERVERS: dict[str, ModelServer] = {}
"""Each server running_server is running, by base URL (for grpc_target)."""


@contextmanager
def running_server(
    settings: Settings,
    *,
    wait_ready: bool = True,
    timeout: float = 60,
    metrics: Metrics | None = None,
    stock_protocol: bool = False,
) -> Iterator[str]:
    """Start `ModelServer(settings, metrics=metrics)` on 127.0.0.1:<free port>; yield its base
    URL. `metrics` lets a test read the app's registry in process (default: the app's own).
    Its gRPC server listens on a free loopback port too (unless the settings name a port or a
    host): `grpc_target(url)`.

    `stock_protocol` serves it with uvicorn's own HTTP protocol instead of modelserve's.

    With `wait_ready`, wait (up to `timeout` seconds) until GET /readyz answers 200, and fail
    with the last /readyz answer otherwise. On exit the server shuts down (lifespan included).
    """
    if "grpc_port" not in settings.model_fields_set:  # many servers at once: free ports
        settings = settings.model_copy(update={"grpc_port": 0})
    if "host" not in settings.model_fields_set:  # gRPC on loopback, as the REST server
        settings = settings.model_copy(update={"host": "127.0.0.1"})
    model_server = ModelServer(settings, metrics=metrics)
    app = asgi_app(model_server)
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "warning",
        "lifespan": "on",
    }
    if stock_protocol:  # as another ASGI server would run the app: no disconnect notice
        config = uvicorn.Config(app, http="httptools", **options)
    else:  # the app and limits of `settings`, as `modelserve serve` runs them
        config = uvicorn_config(model_server, app, **options)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=serve, name="uvicorn-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server stopped during startup: {failure or 'no error'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout} s")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        _SERVERS[url] = model_server
        try:
            if wait_ready:
                _wait_ready(url, deadline)
            yield url
        finally:
            del _SERVERS[url]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=10)


def free_port() -> int:
    """A TCP port free on loopback right now (for servers started as separate processes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def grpc_target(url: str) -> str:
    """`host:port` of the gRPC server of the server running_server runs at `url`."""
    assert url in _SERVERS, f"no server started by running_server runs at {url}"
    # known once the server's parts have started, before uvicorn counts it as started
    return f"127.0.0.1:{_SERVERS[url].grpc_port}"


def _wait_ready(url: str, deadline: float) -> None:
    last = "no answer"
    with httpx.Client(base_url=url, timeout=5) as client:
        while True:
            try:
                response = client.get("/readyz")
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            if time.monotonic() > deadline:
                raise AssertionError(f"server at {url} not ready in time; last /readyz: {last}")
            time.sleep(0.05)


# --- assertions on answers ------------------------------------------------------------------


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Equal, with floats approximately and with bool/int/float kinds kept apart. (This module
    is not assertion-rewritten by pytest, so every assert says what differed and where.)"""
    at = f"at {where or 'top level'}: got {actual!r}, expected {expected!r}"
    if isinstance(expected, dict):
        assert isinstance(actual, dict), at
        assert set(actual) == set(expected), at
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list), at
        assert len(actual) == len(expected), at
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{index}]")
    elif isinstance(expected, bool):
        assert actual is expected, at
    elif isinstance(expected, int):
        assert isinstance(actual, int) and not isinstance(actual, bool), at
        assert actual == expected, at
    elif isinstance(expected, float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), at
        assert actual == pytest.approx(expected, rel=1e-6), at
    else:
        assert actual == expected, at


def assert_no_paths(text: str, root: Path) -> None:
    """Errors and statuses name models and versions, never where the server keeps its files
    (`root`: the folder holding the test's model repository)."""
    for part in (str(root), root.parent.name, str(Path.home()), "/tmp/", "site-packages"):
        assert part not in text, f"{part!r} in {text!r}"
    assert not re.search(r"(?<![\w.])/(tmp|home|root|srv|var|models)\b", text), text


def ok_json(response: httpx.Response) -> Any:
    """Assert a 200 answer and return its JSON body."""
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    return response.json()


def error_message(response: httpx.Response, status: int) -> str:
    """Assert `status` and an error body `{"error": "<non-empty message>"}`; return the message."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text}"
    )
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert body["error"].strip(), body
    message: str = body["error"]
    return message


def client_error_message(response: httpx.Response) -> str:
    """Assert some 4xx (where the contract names no exact status) with an error body."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    return error_message(response, response.status_code)


def mentions(message: str, word: str) -> bool:
    """`word` appears in `message` as a whole word (not inside another identifier)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", message) is not None


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call `probe` until it returns something other than None (or False); fail after timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last probe: {last!r})")


def version_status(client: httpx.Client, model: str) -> dict[str, dict[str, Any]]:
    """GET /v1/models/{model} as {version: entry}; asserts the documented shape."""
    response = client.get(f"/v1/models/{model}")
    assert response.status_code == 200, response.text
    entries = response.json()["model_version_status"]
    assert isinstance(entries, list)
    by_version: dict[str, dict[str, Any]] = {}
    for entry in entries:
        assert isinstance(entry["version"], str), entry
        assert entry["version"] not in by_version, entries
        by_version[entry["version"]] = entry
    return by_version


def available_versions(client: httpx.Client, model: str) -> set[str]:
    return {v for v, e in version_status(client, model).items() if e["state"] == "AVAILABLE"}
