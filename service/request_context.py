"""What one request did, for its access-log line and metric labels.

The HTTP middleware (and the gRPC servicer) starts a record; the layers the request passes
through fill it in: the repository notes the model and version it resolved (only names it
knows, so metric labels stay bounded), the batcher notes the size of the batch that ran it.
The record is a mutable object in a ContextVar, so tasks spawned for the request (they copy
the context) fill in the same record.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass
class RequestRecord:
    request_id: str
    model: str = ""
    version: int | None = None
    batch_size: int | None = None  # rows of the (last) batch the request ran in


_current: ContextVar[RequestRecord | None] = ContextVar("modelserve_request", default=None)


def begin(request_id: str) -> tuple[RequestRecord, Token[RequestRecord | None]]:
    record = RequestRecord(request_id)
    return record, _current.set(record)


def end(token: Token[RequestRecord | None]) -> None:
    _current.reset(token)


def note_model(model: str, version: int | None = None) -> None:
    record = _current.get()
    if record is not None:
        record.model = model
        if version is not None:
            record.version = version


def note_batch_size(rows: int) -> None:
    record = _current.get()
    if record is not None:
        record.batch_size = rows
