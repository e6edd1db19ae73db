"""Reading a request body within the configured size limit, whatever its format."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.errors import PayloadTooLargeError


async def limited_stream(request: Request, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks; 413 as soon as it is known to exceed `max_bytes`: before reading
    anything when the client declares a length, else once the chunks add up past it."""
    check_declared_length(request, max_bytes)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        yield chunk


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused as `limited_stream` refuses it, read from the ASGI messages in
    this coroutine: `request.stream()`, an async generator, costs each request its
    registration with the event loop. The body is read once (nothing reads it again)."""
    check_declared_length(request, max_bytes)
    chunks = []
    received = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)  # one chunk: that chunk, not a copy


def check_declared_length(request: Request, max_bytes: int) -> None:
    """413 before reading anything when the client declares a length over `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the {max_bytes} byte limit"
        )


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the {max_bytes} byte limit")
