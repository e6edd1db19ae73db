"""The REST middleware: one ASGI layer every request passes through, doing in this order what
each of these modules says (outermost first):

1. security headers on every response, errors and the docs pages included
   (service.http.security_headers; with CORS on, a layer of their own outside CORS, see
   service.http.app);
2. bookkeeping: a request id (the client's `X-Request-ID` when it is sane, else a new one;
   echoed in the response), and the request handed to `service.observer` once it ends (a client
   that left mid-request: 499), so the refusals below are counted and logged too;
3. the access check (service.auth): 401 or 403;
4. the drain gate (service.http.lifecycle): 503 while draining, `Connection: close` on the
   answers still given, and the count of requests in flight.

One layer rather than one per concern: each await of a request's task resumes through every
layer's coroutine, and each layer wrapped `send` and `receive` again; here they are wrapped once,
by the request's `_Exchange`."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import AccessPolicy
from service.core.record import RequestRecord
from service.http.connection import client_pause
from service.http.dependencies import RECORD_KEY
from service.http.lifecycle import (
    SHUT_DOWN_MID_REQUEST,
    SHUTTING_DOWN,
    Lifecycle,
    close_connection,
    send_unavailable,
    turns_away,
)
from service.http.security_headers import API_CSP, add_headers, docs_page, response_headers
from service.metrics import Metrics
from service.observer import CLIENT_GONE, Finished, observe

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RAW = REQUEST_ID_HEADER.encode()
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_PROTOCOLS = (("/v1/", "tfserving_rest"), ("/v2", "v2_rest"), ("/api/v1/", "task"))
UNMATCHED_ROUTE = "unmatched"  # no route: a 404 for any path, one label value for all
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # `{model:tfs_target}`: labelled as `{model}`
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class RequestGate:
    """The steps above around `app`; `security_headers=False` leaves step 1 to an outer layer.
    With `unexpected`, an error escaping `app` before its response started is answered by it
    (a JSON 500) through the steps, else raised to the layers outside."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        policy: AccessPolicy,
        metrics: Metrics,
        security_headers: bool = True,
        unexpected: ErrorHandler | None = None,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.policy = policy
        self.metrics = metrics
        self.security_headers = security_headers
        self.unexpected = unexpected
        # (route label, protocol) per route template: a regex substitution less per request
        self._route_labels: dict[str, tuple[str, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Steps 1 and 2 (inline: a coroutine less for each await of the request to pass)."""
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        csp = None  # the exchange adds no security headers
        if self.security_headers:
            docs = docs_page(scope, send)
            if docs is None:
                csp = API_CSP
            else:
                send = docs
        started = time.perf_counter()
        exchange = _Exchange(scope, receive, send, _request_id(scope), csp, self.lifecycle)
        record = scope[RECORD_KEY] = RequestRecord(
            exchange.request_id, client_pause=client_pause(scope)
        )
        try:
            await self._checked(scope, exchange)
        except ClientDisconnect:
            # the client went away mid-body: nothing to answer, nothing went wrong here
            exchange.gone = True
        except Exception as error:
            if self.unexpected is None or exchange.responded:
                raise
            response = await self.unexpected(Request(scope, exchange.receive), error)
            await response(scope, exchange.receive, exchange.send)
        finally:
            # whatever the app made of the disconnect (a 400 for a cut-off body, say), nobody
            # read it: the client is gone (499), never a server error
            final = CLIENT_GONE if exchange.gone else exchange.status
            seconds = time.perf_counter() - started
            observe(self.metrics, record, self._finished(scope, final, seconds))

    def _finished(self, scope: Scope, status: int, seconds: float) -> Finished:
        """What `service.observer` records of a request."""
        template = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
        labels = self._route_labels.get(template)
        if labels is None:
            labels = self._route_labels[template] = _route_labels(template)
        route, protocol = labels
        return Finished(
            protocol, scope["method"], route, scope["path"], str(status), status, seconds
        )

    async def _checked(self, scope: Scope, exchange: _Exchange) -> None:
        """Steps 3 and 4, then the app."""
        receive, send = exchange.receive, exchange.send
        refusal = self.policy.admit(scope)
        if refusal is not None:
            await refusal.answer(scope, receive, send)
            return
        lifecycle = self.lifecycle
        if turns_away(lifecycle, scope):
            await send_unavailable(send, SHUTTING_DOWN)
            return
        exchange.admitted = True
        lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running once the drain time is up: answer it
            if not (lifecycle.draining and not exchange.responded):
                raise
            await send_unavailable(send, SHUT_DOWN_MID_REQUEST)
        finally:
            lifecycle.in_flight -= 1

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket needs step 3 only; lifespan none."""
        refusal = self.policy.admit(scope) if scope["type"] == "websocket" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal.answer(scope, receive, send)


class _Exchange:
    """One HTTP request's `receive` and `send` as the app sees them: `receive` notes a client
    that disconnects before the response starts; `send` notes the response's status and adds to
    its start the headers of the steps, in the order their separate layers did (innermost
    first): `Connection: close`, the request id, the security headers."""

    __slots__ = (
        "_csp",
        "_https",
        "_lifecycle",
        "_receive",
        "_send",
        "admitted",
        "gone",
        "request_id",
        "responded",
        "status",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        csp: str | None,
        lifecycle: Lifecycle,
    ) -> None:
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self._csp = csp  # None: no security headers here
        self._https = scope.get("scheme") == "https"
        self._lifecycle = lifecycle
        self.status = 500  # unless a response starts
        self.responded = False
        self.gone = False  # the client disconnected before the response started
        self.admitted = False  # past the drain gate, so told to close while draining

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.responded:
            self.gone = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start(message)
        await self._send(message)

    def _start(self, message: Message) -> None:
        self.responded = True
        self.status = message["status"]
        if self.admitted and self._lifecycle.draining:
            close_connection(message)
        headers = response_headers(message)
        headers.append((_REQUEST_ID_RAW, self.request_id.encode("latin-1")))
        if self._csp is not None:
            add_headers(message, self._csp, self._https)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_RAW:
            text: str = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return _new_request_id()


def _new_request_id() -> str:
    """A random version 4 UUID's 32 hex digits, as `uuid.uuid4().hex` writes it, from
    `random` rather than `os.urandom`: a request id names a request in the logs and needs no
    secrecy, and the system call a request was 3.6 % of an echo server's samples (py-spy).
    `random` is seeded from the system at import and again in a forked child."""
    value = random.getrandbits(128)
    value = (value & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    return f"{value:032x}"


def _route_labels(template: str) -> tuple[str, str]:
    """A route template as a metric label (`{model:tfs_target}` as `{model}`) and the
    protocol it belongs to."""
    route = _CONVERTOR.sub(_name_only, template)
    return route, _protocol(route)


def _name_only(convertor: re.Match[str]) -> str:
    return "{" + convertor[1] + "}"  # a function: cheaper than the template r"{\1}"


def _protocol(route: str) -> str:
    for prefix, protocol in _PROTOCOLS:
        if route.startswith(prefix):
            return protocol
    return "other"
