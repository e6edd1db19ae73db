"""Graceful shutdown of the REST side: while draining, readiness answers 503, new requests get
503 with `Retry-After` and `Connection: close`, and admitted ones finish; the socket stays open
until then, so clients can tell a restart from a crash (a reset or "connection refused")."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Answered while draining: liveness must hold (a failing liveness probe means SIGKILL) and the
# readiness routes say "draining" themselves; metrics are scraped until the end.
ANSWERED_WHILE_DRAINING = frozenset(
    {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"}
)
IDLE_POLL_SECONDS = 0.02


@dataclass
class Lifecycle:
    """Whether the server is draining, and how many HTTP requests it is still working on."""

    draining: bool = False
    in_flight: int = 0

    async def wait_idle(self, timeout_seconds: float) -> bool:
        """Until no admitted request is left (True) or `timeout_seconds` have passed (False)."""
        deadline = time.monotonic() + timeout_seconds
        while self.in_flight:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(IDLE_POLL_SECONDS)
        return True


class DrainGate:
    """ASGI middleware: counts requests in flight; while draining refuses new ones (503) and
    tells every client to close its connection."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        if lifecycle.draining and scope["path"] not in ANSWERED_WHILE_DRAINING:
            await _send_unavailable(send, "the server is shutting down; retry on another replica")
            return
        response_started = False

        async def send_closing(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                if lifecycle.draining:  # the client should reconnect, to another replica
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send_closing)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running once the drain time is up: answer it
            if not (lifecycle.draining and not response_started):
                raise
            await _send_unavailable(send, "the server shut down before this request finished")
        finally:
            lifecycle.in_flight -= 1


async def _send_unavailable(send: Send, message: str) -> None:
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
