"""`GET /metrics`: the app's metrics in Prometheus' text format (service.metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.http import dependencies as state
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    exposition = state.metrics(request).exposition()
    return Response(exposition, media_type=CONTENT_TYPE)
