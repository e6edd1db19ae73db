"""One exception hierarchy for every protocol: each class carries the HTTP status and the
canonical (gRPC/TF) code that TF Serving maps the failure to (INVALID_ARGUMENT -> 400,
NOT_FOUND -> 404, UNAVAILABLE -> 503, ...), so REST and gRPC answer it the same way."""

from __future__ import annotations


class ServingError(Exception):
    """A failure the client should see, with a message that says what went wrong."""

    http_status = 500
    code = "INTERNAL"

    def __init_subclass__(cls, *, http_status: int, code: str) -> None:
        super().__init_subclass__()
        cls.http_status = http_status
        cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServingError, http_status=400, code="INVALID_ARGUMENT"):
    """The request is malformed: bad JSON, unknown or missing inputs, wrong shape or dtype."""


class NotFoundError(ServingError, http_status=404, code="NOT_FOUND"):
    """Unknown model, version, label or signature."""


class PayloadTooLargeError(ServingError, http_status=413, code="RESOURCE_EXHAUSTED"):
    """The body exceeds the configured request size limit."""


class UnsupportedMediaTypeError(ServingError, http_status=415, code="INVALID_ARGUMENT"):
    """The body (or an uploaded file) is of a type the endpoint does not take."""


class ConflictError(ServingError, http_status=409, code="FAILED_PRECONDITION"):
    """The model cannot serve this endpoint as it is, e.g. a `resnet50` with random weights."""


class QueueFullError(ServingError, http_status=429, code="RESOURCE_EXHAUSTED"):
    """The model's queue is at max_queue_size: shed load now rather than answer late."""

    retry_after_seconds = 1


class DeadlineExceededError(ServingError, http_status=504, code="DEADLINE_EXCEEDED"):
    """The request's deadline passed before the model could start on it."""


class ClientGoneError(ServingError, http_status=499, code="CANCELLED"):
    """The client disconnected while its request waited (nginx's 499; nobody reads it)."""


class UnavailableError(ServingError, http_status=503, code="UNAVAILABLE"):
    """The model exists but has no version able to answer yet (loading, warming up, draining)."""


class UnimplementedError(ServingError, http_status=501, code="UNIMPLEMENTED"):
    """A method the model or this server does not support, e.g. Classify without its signature."""


class ModelFailureError(ServingError, http_status=500, code="INTERNAL"):
    """The model raised while computing a valid request: a server-side bug or a broken model."""
