"""What the protocol adapters need from the running app, read from `app.state` (set up by
`service.app.create_app`), so there are no module-level singletons."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from service.errors import InvalidInputError
from service.protocols.json_io import JSONDocument, read_json
from service.repository import ModelRepository
from service.settings import Settings


def repository(request: Request) -> ModelRepository:
    return cast(ModelRepository, request.app.state.repository)


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def read_request_json(request: Request, *, allow_non_finite: bool = False) -> JSONDocument:
    """The body as JSON, within the configured size limit."""
    limit = settings(request).max_request_bytes
    return await read_json(request, max_bytes=limit, allow_non_finite=allow_non_finite)


def parse_version(text: str) -> int:
    """A version from a URL segment: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"version must be a positive integer, got {text!r}")
    return int(text)
