"""What one request did, for its access-log line and metric labels: the transport starts a
record and hands it to the inference core, which fills in the model and version it resolved
(only names the server serves, so metric labels stay bounded) and the size of the batch that
ran the request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestRecord:
    request_id: str
    model: str = ""
    version: int | None = None
    batch_size: int | None = None  # rows of the (last) batch the request ran in
