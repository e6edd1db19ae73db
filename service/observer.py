"""One observer of finished requests, REST and gRPC alike: request metrics, the reason a request
was turned away (read from the HTTP status every failure maps to, whatever the protocol), and
one JSON access-log line."""

from __future__ import annotations

import logging
from typing import NamedTuple

from service.core.record import RequestRecord
from service.errors import ServingError
from service.logs import ACCESS_LOGGER
from service.metrics import Metrics, rejection_reason

CLIENT_GONE = 499  # nginx's status for a client that closed before its answer
access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger(__name__)


class Finished(NamedTuple):
    """A request as it ended (a tuple: one is made per request)."""

    protocol: str  # tfserving_rest, v2_rest, task, grpc, other
    method: str  # the HTTP method, or "grpc"
    route: str  # the route template, or the gRPC method's full name
    path: str  # what the client asked for
    code: str  # as the protocol says it: "200", "OK"
    status: int  # the HTTP status it maps to (a gRPC client that left: 499)
    seconds: float


def observe(metrics: Metrics, record: RequestRecord, finished: Finished) -> None:
    metrics.count_request(
        record.model, finished.protocol, finished.route, finished.code, finished.seconds
    )
    reason = rejection_reason(finished.status)
    if reason is not None:
        metrics.rejected.labels(record.model, reason).inc()
    if access_log.isEnabledFor(logging.INFO):  # else the line's fields are built for nothing
        _log_access(record, finished)


def _log_access(record: RequestRecord, finished: Finished) -> None:
    access_log.info(
        "%s %s %s",
        finished.method,
        finished.path,
        finished.code,
        extra={
            "fields": {
                "method": finished.method,
                "route": finished.route,
                "path": finished.path,
                "model": record.model or None,
                "version": record.version,
                "status": finished.status,
                **({} if finished.code == str(finished.status) else {"code": finished.code}),
                "latency_ms": round(finished.seconds * 1000, 3),
                "batch_size": record.batch_size,
                "client_pause_ms": _ms(record.client_pause),
                "request_id": record.request_id,
            }
        },
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def log_failure(where: str, exc: ServingError) -> None:
    """Overload and deadlines (503, 504) are warnings, other server errors errors; client errors
    are the access log's."""
    if exc.http_status in (503, 504):
        log.warning("%s: %s", where, exc.message)
    elif exc.http_status >= 500:
        log.error("%s: %s", where, exc.message)
