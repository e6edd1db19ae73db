"""Liveness and readiness probes (Kubernetes) and their Open Inference Protocol mirrors."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.http.dependencies import lifecycle, repository
from service.http.json_io import JSONBody

router = APIRouter(tags=["health"], default_response_class=JSONBody)


@router.get("/healthz", summary="Liveness: the process is up and answering")
async def healthz() -> JSONBody:
    return JSONBody({"status": "alive"})


@router.get("/readyz", summary="Readiness: every model (but those unloaded) has a version up")
async def readyz(request: Request) -> JSONBody:
    models = repository(request).readiness()
    if lifecycle(request).draining:  # shutting down: take this replica out of rotation
        return JSONBody({"status": "draining", "models": models}, status_code=503)
    ready = repository(request).is_ready()
    return JSONBody(
        {"status": "ready" if ready else "loading", "models": models},
        status_code=200 if ready else 503,
    )


@router.get("/v2/health/live", summary="V2 liveness")
async def v2_live() -> JSONBody:
    return JSONBody({"live": True})


@router.get("/v2/health/ready", summary="V2 readiness (same rule as /readyz)")
async def v2_ready(request: Request) -> JSONBody:
    ready = repository(request).is_ready() and not lifecycle(request).draining
    return JSONBody({"ready": ready}, status_code=200 if ready else 503)
