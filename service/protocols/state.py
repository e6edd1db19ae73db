"""What the protocol adapters need from the running app, read from `app.state` (set up by
`service.app.create_app`), so there are no module-level singletons."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from service.errors import InvalidInputError
from service.repository import ModelRepository
from service.settings import Settings


def repository(request: Request) -> ModelRepository:
    return cast(ModelRepository, request.app.state.repository)


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def parse_version(text: str) -> int:
    """A version from a URL segment: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"version must be a positive integer, got {text!r}")
    return int(text)
