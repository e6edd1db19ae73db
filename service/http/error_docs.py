"""Every REST route documents its failures as the one body the exception handlers write,
`{"error": "..."}`, so clients (and schema-driven tests) can rely on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorAnswer(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    error: str
    """What was wrong: the field, file or limit, and what was expected."""


def error_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`, plus `4XX`: it also keeps FastAPI from documenting a 422 that
    this server never sends (its validation errors are 400s with an ErrorAnswer)."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorAnswer, "description": description}
        for status, description in descriptions.items()
    }
    responses["4XX"] = {"model": ErrorAnswer, "description": "Any other client error."}
    return responses


INVALID = "Malformed or invalid input; the message says which field and what was expected."
NOT_FOUND = "The model, version, label or signature is not served."
TOO_LARGE = "The request body is over the server's size limit."
QUEUE_FULL = "The model's queue is full; retry after `Retry-After` seconds."
LOADING = "The model has no version able to answer yet (loading, or the server is draining)."
DEADLINE = "The request's deadline (`X-Request-Timeout`) passed before the model ran."

STATUS_ERRORS = error_responses({400: INVALID, 404: NOT_FOUND})
METADATA_ERRORS = error_responses({400: INVALID, 404: NOT_FOUND, 503: LOADING})
PREDICT_ERRORS = error_responses(
    {
        400: INVALID,
        404: NOT_FOUND,
        413: TOO_LARGE,
        429: QUEUE_FULL,
        501: "The model has no signature for this method (:classify, :regress).",
        503: LOADING,
        504: DEADLINE,
    }
)
INFER_ERRORS = error_responses(
    {400: INVALID, 404: NOT_FOUND, 413: TOO_LARGE, 429: QUEUE_FULL, 503: LOADING, 504: DEADLINE}
)
