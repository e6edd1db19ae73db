"""A real HTTP server on loopback whose answers each test sets, for downloads: the bytes with or
without Content-Length, a Content-Length larger than the bytes then a closed connection (cut
off) or a stall (to stop a download midway), and 404 for any path without a route.

    def test_x(served: RouteServer) -> None:
        url = served.serve("/file.h5", data, stall=True)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CHUNK = 1_000  # bytes a write: a stalled answer has sent whole chunks


@dataclass(frozen=True)
class Route:
    body: bytes
    length: int | None  # the Content-Length sent; None sends none (the close ends the body)
    stall: bool  # after the body, hold the connection open until the test ends


class RouteServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    hits: list[str]
    released: threading.Event  # set at the end of the test: stalled responses end

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def serve(
        self, path: str, body: bytes, *, sized: bool = True, missing: int = 0, stall: bool = False
    ) -> str:
        """Route `path` to `body`; its URL. Without a Content-Length unless `sized`; one that
        promises `missing` bytes more than the body has (a cut-off download) if given."""
        self.routes[path] = Route(body, len(body) + missing if sized else None, stall)
        return self.url(path)


class Handler(BaseHTTPRequestHandler):
    server: RouteServer  # HTTP/1.0 (the default): one request a connection

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        self.send_response(200)
        if route.length is not None:
            self.send_header("Content-Length", str(route.length))
        self.end_headers()
        for start in range(0, len(route.body), CHUNK):
            self.wfile.write(route.body[start : start + CHUNK])
            self.wfile.flush()
        if route.stall:
            self.server.released.wait(60)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output to the tests' own


@pytest.fixture
def served() -> Iterator[RouteServer]:
    server = RouteServer(("127.0.0.1", 0), Handler)
    server.routes, server.hits, server.released = {}, [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
