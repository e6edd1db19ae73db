"""What the HTTP protocol (`service.http.limits.LimitedHttpToolsProtocol`) gives each request
beyond uvicorn's own: a notice of a lost connection the app can wait on for free, a response
written in one send, and how long the client paused after its previous answer on the
connection before sending it (`client_pause`: what refill learns whether to hold from, see
service/core/refill.py).

The first two are measured savings on the inference path (`benchmarks/hot_path.py`): the app
learned of a disconnect by a task per request reading the next ASGI message (a task created,
stepped and cancelled for every answered request), and uvicorn writes a response's head and
body in two sends, two loopback segments for the client to read."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Scope

NOTICE_KEY = "modelserve.disconnect_notice"  # in the request's scope: its DisconnectNotice
PAUSE_KEY = "modelserve.client_pause"  # in the request's scope: seconds, or None


class DisconnectNotice:
    """Set by the protocol when the connection of a request not yet answered is lost; a task
    waiting for that request's answer (`waiter`) is cancelled at once."""

    __slots__ = ("lost", "waiter")

    def __init__(self) -> None:
        self.lost = False
        self.waiter: asyncio.Task[Any] | None = None

    def connection_lost(self) -> None:
        self.lost = True
        if self.waiter is not None:
            self.waiter.cancel()


def equip(cycle: Any, pause: float | None) -> None:
    """Gives a request (uvicorn's `RequestResponseCycle`) its notice, its transport and the
    client's pause before it (None for a connection's first request)."""
    cycle.scope[NOTICE_KEY] = DisconnectNotice()
    cycle.scope[PAUSE_KEY] = pause
    cycle.transport = ResponseTransport(cycle.transport, cycle)


def connection_lost(cycle: Any) -> None:
    """The connection of a request not yet answered is lost."""
    notice = disconnect_notice(cycle.scope)
    if notice is not None:
        notice.connection_lost()


def client_pause(scope: Scope) -> float | None:
    """Seconds from the previous answer on the request's connection to the request's first
    byte; None for a connection's first request, or when another ASGI server runs the app."""
    pause: float | None = scope.get(PAUSE_KEY)
    return pause


def disconnect_notice(scope: Scope) -> DisconnectNotice | None:
    """The request's notice; None when the server running the app gives none (another ASGI
    server, or the app called in process)."""
    notice: DisconnectNotice | None = scope.get(NOTICE_KEY)
    return notice


class ResponseTransport:
    """The transport one request's response is written to (uvicorn's `RequestResponseCycle`
    writes through it): the head (status line and headers) is held back and written with the
    first piece of body, one send instead of two. A head without a body (HEAD, 204, a stream
    not started) goes out on the next turn of the loop, or on close."""

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle  # uvicorn's RequestResponseCycle: its head is written once started
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if self._head is not None:  # the body's first piece: one send with the head
            data, self._head = self._head + data, None
        elif not self._head_seen and self._cycle.response_started:
            # the first write once the response started is its head (an earlier one is
            # `100 Continue`, written before it starts)
            self._head, self._head_seen = data, True
            asyncio.get_running_loop().call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may ask of a transport
        return getattr(self._transport, name)
