"""What the protocol adapters need from the running server (`service.server.ModelServer`,
found in `app.state.server`), so there are no module-level singletons."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import numpy as np
from fastapi import Depends, Request
from starlette.responses import Response

from service.core.inference import InferenceCore
from service.core.record import RequestRecord
from service.errors import ClientGoneError, InvalidInputError
from service.http.body import read_limited
from service.http.connection import disconnect_notice
from service.http.json_io import BodySplit, JSONDocument, respond, with_document
from service.http.lifecycle import Lifecycle
from service.metrics import Metrics

if TYPE_CHECKING:  # the repository imports TensorFlow: front-end workers must not
    from service.core.repository import ModelRepository
    from service.processes.link import RepositoryMirror
    from service.server import ModelServer

T = TypeVar("T")


def server(request: Request) -> ModelServer:
    return cast("ModelServer", request.app.state.server)


def repository(request: Request) -> ModelRepository | RepositoryMirror:
    return server(request).parts.repository


async def _inference_core(request: Request) -> InferenceCore:
    return server(request).parts.core


# async: a plain `def` dependency would cost every request a hop to FastAPI's thread pool
Core = Annotated[InferenceCore, Depends(_inference_core)]

RECORD_KEY = "modelserve.record"  # where `service.http.middleware` puts the request's record


def request_record(request: Request) -> RequestRecord:
    return cast(RequestRecord, request.scope[RECORD_KEY])


def lifecycle(request: Request) -> Lifecycle:
    return server(request).lifecycle


def metrics(request: Request) -> Metrics:
    return server(request).metrics


async def off_loop(request: Request, size: int, work: Callable[[], T]) -> T:
    """`work` on a payload of `size` bytes: inline when small, else in the decode pool, and
    abandoned if the client disconnects meanwhile."""
    pool = server(request).parts.body_decoder
    if pool.runs_inline(size):  # no disconnect watch: nothing long to abandon
        return work()
    return await until_disconnected(request, pool.run(size, work))


async def read_request_json(
    request: Request,
    use: Callable[[JSONDocument], T],
    *,
    allow_non_finite: bool = False,
    split: BodySplit | None = None,
) -> T:
    """`use(document)` on the body (within the size limit) parsed as JSON, both off the loop
    when large: `use` decodes and validates, and must return nothing sharing the document's
    lists. `split` parts a body of JSON and binary data (see `with_document`)."""
    body = await read_limited(request, server(request).settings.max_request_bytes)
    return await off_loop(
        request,
        len(body),
        lambda: with_document(body, use, allow_non_finite=allow_non_finite, split=split),
    )


async def answer_json(
    request: Request, outputs: Mapping[str, np.ndarray], build: Callable[[], Any]
) -> Response:
    """The JSON answer `build()` makes of `outputs`, encoded off the loop when they are large."""
    size = sum(array.nbytes for array in outputs.values())
    return await off_loop(request, size, lambda: respond(build(), outputs.values()))


def request_timeout_ms(request: Request) -> float | None:
    """The caller's deadline from `X-Request-Timeout` (milliseconds), if given."""
    text = request.headers.get("x-request-timeout")
    if text is None:
        return None
    try:
        timeout = float(text)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 3_600_000:
        raise InvalidInputError(
            f"X-Request-Timeout must be a number of milliseconds in (0, 3600000), got {text!r}"
        )
    return timeout


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`, cancelling it if the client disconnects first (a queued request then
    leaves the batcher's queue instead of using the model for nobody): 499."""
    notice = disconnect_notice(request.scope)
    if notice is None:
        return await _watching_receive(request, work)
    this = asyncio.current_task()
    assert this is not None
    if notice.lost:  # gone before the wait began
        _discard(work)
        raise _client_gone()
    notice.waiter = this
    try:
        return await work
    except asyncio.CancelledError:
        if notice.lost and this.uncancel() == 0:  # the notice's cancellation, and no one else's
            raise _client_gone() from None
        raise
    finally:
        notice.waiter = None


async def _watching_receive(request: Request, work: Awaitable[T]) -> T:
    """`until_disconnected` where the server gives no disconnect notice: a watch reads the next
    ASGI message and cancels this task on a disconnect (one task more per request)."""
    this = asyncio.current_task()
    assert this is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        # The body has been read: the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        this.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and this.uncancel() == 0:  # the watch's cancellation, and no one else's
            raise _client_gone() from None
        raise
    finally:
        watcher.cancel()


def _discard(work: Awaitable[Any]) -> None:
    """Work that will not be awaited: a coroutine closed before it starts, a future cancelled."""
    if isinstance(work, Coroutine):
        work.close()
    elif isinstance(work, asyncio.Future):
        work.cancel()


def _client_gone() -> ClientGoneError:
    return ClientGoneError("the client closed the connection before the answer")
