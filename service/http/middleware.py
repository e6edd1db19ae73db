"""Per-request bookkeeping around every HTTP request: a request id (the client's
`X-Request-ID` when it is sane, else a new one; echoed in the response), and the request
handed to `service.observer` once it ends (a client that left mid-request: 499)."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.record import RequestRecord
from service.http.dependencies import RECORD_KEY
from service.metrics import Metrics
from service.observer import CLIENT_GONE, Finished, observe

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_PROTOCOLS = (("/v1/", "tfserving_rest"), ("/v2", "v2_rest"), ("/api/v1/", "task"))
UNMATCHED_ROUTE = "unmatched"  # no route: a 404 for any path, one label value for all
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # `{model:tfs_target}`: labelled as `{model}`


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        record = scope[RECORD_KEY] = RequestRecord(request_id)
        status = 500  # unless a response starts
        gone = False  # the client disconnected before the response started
        responded = False

        async def receive_watching() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not responded:
                gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_id)
        except ClientDisconnect:
            # the client went away mid-body: nothing to answer, nothing went wrong here
            gone = True
        finally:
            # whatever the app made of the disconnect (a 400 for a cut-off body, say), nobody
            # read it: the client is gone (499), never a server error
            final = CLIENT_GONE if gone else status
            seconds = time.perf_counter() - started
            route = _CONVERTOR.sub(r"{\1}", getattr(scope.get("route"), "path", UNMATCHED_ROUTE))
            protocol = next((p for prefix, p in _PROTOCOLS if route.startswith(prefix)), "other")
            finished = Finished(
                protocol, scope["method"], route, scope["path"], str(final), final, seconds
            )
            observe(self.metrics, record, finished)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex
