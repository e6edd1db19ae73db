"""`GET /metrics`: the app's metrics in Prometheus' text format (service.metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.http import dependencies as state

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(await state.server(request).exposition(), media_type=CONTENT_TYPE_LATEST)
