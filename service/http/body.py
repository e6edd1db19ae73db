"""Reading a request body within the configured size limit, whatever its format."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request

from service.errors import PayloadTooLargeError


async def limited_stream(request: Request, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks; 413 as soon as it is known to exceed `max_bytes`: before reading
    anything when the client declares a length, else once the chunks add up past it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the {max_bytes} byte limit"
        )
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLargeError(f"request body exceeds the {max_bytes} byte limit")
        yield chunk
