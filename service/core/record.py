"""What one request did, for its access-log line and metric labels: the transport starts it
(with how long the client paused before sending it), the inference core fills in the model
(only served names: bounded labels), version and batch size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestRecord:
    request_id: str
    model: str = ""
    version: int | None = None
    batch_size: int | None = None  # rows of the (last) batch the request ran in
    # seconds from the previous answer on the client's connection to this request (its think
    # time): None for a connection's first request, gRPC, or another ASGI server
    client_pause: float | None = None
