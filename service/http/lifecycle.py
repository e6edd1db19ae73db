"""Graceful shutdown of the REST side: while draining, readiness answers 503, new requests get
503 with `Retry-After` and `Connection: close`, and admitted ones finish; the socket stays open
until then, so clients can tell a restart from a crash (a reset or "connection refused").
The REST middleware (service.http.middleware) applies these: it counts the requests in flight."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Scope, Send

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


SHUTTING_DOWN = "the server is shutting down; retry on another replica"
SHUT_DOWN_MID_REQUEST = "the server shut down before this request finished"


def turns_away(lifecycle: Lifecycle, scope: Scope) -> bool:
    """Whether a new request is refused (503, `send_unavailable`) rather than admitted."""
    return lifecycle.draining and scope["path"] not in ANSWERED_WHILE_DRAINING


def close_connection(start: Message) -> None:
    """Tells the client of an admitted request to reconnect (to another replica) while
    draining: `Connection: close` on its response's start."""
    MutableHeaders(scope=start)["connection"] = "close"


async def send_unavailable(send: Send, message: str) -> None:
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
