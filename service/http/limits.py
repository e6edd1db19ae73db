"""Limits on HTTP connections (the settings' `max_header_*`, `*_timeout_seconds` and
`max_connections`), enforced in uvicorn's protocol. Each refusal counts in
`modelserve_http_refused_total{reason}` and logs one INFO line.

The protocol also gives each request what `service.http.connection` describes: a notice of a
lost connection, its response written in one send, and the client's pause before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.connection import connection_lost, equip

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from service.server import ModelServer
    from service.settings import Settings

log = logging.getLogger(__name__)

REFUSAL_REASONS = (
    "headers_too_large",
    "too_many_headers",
    "header_timeout",
    "idle_timeout",
    "body_timeout",
    "too_many_connections",
)


def uvicorn_config(server: ModelServer, app: ASGIApp, **options: Any) -> uvicorn.Config:
    """uvicorn's config for `app` (the server's REST app, or what wraps it) with the HTTP
    limits of the server's settings and `options` (host, port, logging, TLS...)."""
    metrics = server.metrics
    # uvicorn builds one protocol per connection, from the class alone
    protocol = type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "limits": server.settings,
            "count_refusal": staticmethod(lambda reason: metrics.http_refused.labels(reason).inc()),
        },
    )
    return uvicorn.Config(app, http=protocol, **options)


class _RefusalError(Exception):
    """Raised from a parser callback with the arguments of `_refuse`, to stop parsing."""


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()  # a no-op once it has fired


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn reads headers of any size (a 100 MB header froze the event loop for seconds),
    never times out a connection that sends nothing or trickles, and caps connections only if
    asked: here it does all three, before a request reaches the app."""

    limits: Settings
    count_refusal: Callable[[str], None]  # called with each refusal's reason (REFUSAL_REASONS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers (or waiting for one)
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._requests = 0  # requests whose headers were accepted on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_body_read = 0.0
        # perf_counter when the last response was complete (uvloop's time is in whole ms)
        self._answered_at: float | None = None
        self._pause: float | None = None  # the client's, before the request being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            connection_lost(self.cycle)
        _cancel(self._head_timer)
        _cancel(self._body_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if not self._in_head:
            self._last_body_read = self.loop.time()
            self._feed(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        head, rest = data[:room], data[room:]
        self._head_bytes += len(head)
        self._feed(head)  # never more than the limit: the parser sees no oversized header
        if rest and not self._refused and not self.transport.is_closing():
            if self._in_head:  # the headers did not end within the limit
                limit = self.limits.max_header_bytes
                message = f"request line and headers exceed the {limit} byte limit"
                self._refuse(431, "headers_too_large", message)
            else:  # they ended: the rest is body, or the next request
                self.data_received(rest)

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, except that a refusal raised by a callback is answered
        with its own status instead of uvicorn's 400."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _RefusalError):
                self._refuse(*exc.__context__.args)
            else:
                self._invalid()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self._invalid()

    def _invalid(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        answered = self._answered_at
        if self.cycle is not None and not self.cycle.response_complete:
            self._pause = 0.0  # pipelined: sent before its predecessor was answered
        elif answered is None:  # the connection's first request
            self._pause = None
        else:
            self._pause = time.perf_counter() - answered

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        limit = self.limits.max_header_count
        if self._header_count > limit:
            raise _RefusalError(431, "too_many_headers", f"more than {limit} request headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        limit = self.limits.max_connections
        if len(self.connections) > limit:  # this one included
            message = f"the server has too many open connections (limit {limit}); retry shortly"
            raise _RefusalError(503, "too_many_connections", message)
        self._in_head = False
        self._requests += 1
        _cancel(self._head_timer)
        self._last_body_read = self.loop.time()
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._body_timed_out
        )
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # this request's
            equip(self.cycle, self._pause)  # before its task starts, on the loop's next turn

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        _cancel(self._body_timer)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered_at = time.perf_counter()
        super().on_response_complete()
        if not self.transport.is_closing():  # waiting for the next request: its headers too
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        _cancel(self._head_timer)
        timeout = self.limits.header_timeout_seconds
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self._in_head or busy or self.transport.is_closing():
            return  # a request is running: the timer is armed again after its response
        if self._head_bytes == 0:  # nothing sent: close quietly (no request to answer)
            if self._requests == 0:  # else a keep-alive connection expiring, as it should
                self.count_refusal("idle_timeout")
            self.transport.close()
            return
        seconds = f"{self.limits.header_timeout_seconds:g}"
        self._refuse(408, "header_timeout", f"request headers not received within {seconds} s")

    def _body_timed_out(self) -> None:
        if self._in_head or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not reading yet: not the client's fault
            self._last_body_read = now
        timeout = self.limits.body_timeout_seconds
        idle = now - self._last_body_read
        if idle < timeout:  # data came meanwhile: wait for the rest
            self._body_timer = self.loop.call_later(timeout - idle, self._body_timed_out)
            return
        self.count_refusal("body_timeout")
        log.info("%s: request body stalled for %g s: connection closed", self._peer(), timeout)
        self.transport.close()  # the app reads a disconnect: client_gone (499)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer `status` with a JSON error body (as every modelserve error) and close."""
        self._refused = True
        _cancel(self._head_timer)
        _cancel(self._body_timer)
        self.count_refusal(reason)
        log.info("%s: %d %s", self._peer(), status, message)
        body = orjson.dumps({"error": message})
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(lines) + b"\r\n" + body)
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"
