"""What one request did, for its access-log line and metric labels: the transport starts it, the
inference core fills in the model (only served names: bounded labels), version and batch size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestRecord:
    request_id: str
    model: str = ""
    version: int | None = None
    batch_size: int | None = None  # rows of the (last) batch the request ran in
