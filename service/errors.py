"""One exception hierarchy for every protocol.

Each class carries the HTTP status and the canonical (gRPC/TF) error code it maps to, following
TF Serving's own mapping (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404, UNAVAILABLE -> 503, ...),
so REST and gRPC answer the same failure the same way.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: a failure the client should see, with a message that says what went wrong."""

    http_status = 500
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServingError):
    """The request is malformed: bad JSON, unknown or missing inputs, wrong shape or dtype."""

    http_status = 400
    code = "INVALID_ARGUMENT"


class NotFoundError(ServingError):
    """Unknown model, version, label or signature."""

    http_status = 404
    code = "NOT_FOUND"


class PayloadTooLargeError(ServingError):
    """The body exceeds the configured request size limit."""

    http_status = 413
    code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaTypeError(ServingError):
    """The body (or an uploaded file) is of a type the endpoint does not take."""

    http_status = 415
    code = "INVALID_ARGUMENT"


class ConflictError(ServingError):
    """The model cannot serve this endpoint as it is, e.g. a `resnet50` with random weights."""

    http_status = 409
    code = "FAILED_PRECONDITION"


class QueueFullError(ServingError):
    """The model's queue is at max_queue_size: shed load now rather than answer late."""

    http_status = 429
    code = "RESOURCE_EXHAUSTED"
    retry_after_seconds = 1


class DeadlineExceededError(ServingError):
    """The request's deadline passed before the model could start on it."""

    http_status = 504
    code = "DEADLINE_EXCEEDED"


class ClientGoneError(ServingError):
    """The client disconnected while its request waited (nginx's 499; nobody reads it)."""

    http_status = 499
    code = "CANCELLED"


class UnavailableError(ServingError):
    """The model exists but has no version able to answer yet (loading, warming up, draining)."""

    http_status = 503
    code = "UNAVAILABLE"


class UnimplementedError(ServingError):
    """A method the model (or this server) does not support, such as Classify without a
    classification signature."""

    http_status = 501
    code = "UNIMPLEMENTED"


class ModelFailureError(ServingError):
    """The model raised while computing a valid request: a server-side bug or a broken model."""

    http_status = 500
    code = "INTERNAL"
