"""What the protocol adapters need from the running app, read from `app.state` (set up by
`service.app.create_app`), so there are no module-level singletons."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar, cast

from fastapi import Request

from service.errors import ClientGoneError, InvalidInputError
from service.lifecycle import Lifecycle
from service.protocols.json_io import JSONDocument, read_json
from service.repository import ModelRepository
from service.settings import Settings

T = TypeVar("T")


def repository(request: Request) -> ModelRepository:
    return cast(ModelRepository, request.app.state.repository)


def lifecycle(request: Request) -> Lifecycle:
    return cast(Lifecycle, request.app.state.lifecycle)


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def read_request_json(request: Request, *, allow_non_finite: bool = False) -> JSONDocument:
    """The body as JSON, within the configured size limit."""
    limit = settings(request).max_request_bytes
    return await read_json(request, max_bytes=limit, allow_non_finite=allow_non_finite)


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
    leaves the batcher's queue instead of using the model for nobody)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGoneError("the client closed the connection before the answer")
    return task.result()


async def _disconnect(request: Request) -> None:
    # The body has been read: the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def parse_version(text: str) -> int:
    """A version from a URL segment: a positive integer. In ASCII digits, and not thousands of
    them: int() refuses both "²" (a digit to str.isdigit) and over 4,300 digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 100) or int(text) < 1:
        raise InvalidInputError(f"version must be a positive integer, got {text[:100]!r}")
    return int(text)
