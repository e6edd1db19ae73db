"""Liveness and readiness probes (Kubernetes) and their Open Inference Protocol mirrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from service.http.dependencies import lifecycle, repository
from service.http.json_io import JSONBody

router = APIRouter(tags=["health"], default_response_class=JSONBody)
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def probe(path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """A GET route that answers HEAD too (the status and headers, without the body): load
    balancers and uptime checkers often probe with HEAD. The HEAD route stays out of the
    OpenAPI document, where it would be a second operation under the same operation id."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return router.get(path, **options)(endpoint)

    return register


@probe("/healthz", summary="Liveness: the process is up and answering")
async def healthz() -> JSONBody:
    return JSONBody({"status": "alive"})


@probe(
    "/readyz",
    summary="Readiness: every model has a version up (but those unloaded or being exported)",
)
async def readyz(request: Request) -> JSONBody:
    """`models`: name -> serving. Models the server exports itself (`--auto-export`) do not
    hold readiness back; `coming` says which are on their way and why, `not_exported` which
    failed and how to provide them."""
    models = repository(request).readiness()
    notes = repository(request).export_notes()
    body: dict[str, Any] = {"status": "ready", "models": models}
    for key, coming in (("coming", True), ("not_exported", False)):
        listed = {name: note.detail for name, note in notes.items() if note.coming == coming}
        if listed:
            body[key] = listed
    if lifecycle(request).draining:  # shutting down: take this replica out of rotation
        return JSONBody({**body, "status": "draining"}, status_code=503)
    ready = repository(request).is_ready()
    return JSONBody(
        {**body, "status": "ready" if ready else "loading"}, status_code=200 if ready else 503
    )


@probe("/v2/health/live", summary="V2 liveness")
async def v2_live() -> JSONBody:
    return JSONBody({"live": True})


@probe("/v2/health/ready", summary="V2 readiness (same rule as /readyz)")
async def v2_ready(request: Request) -> JSONBody:
    ready = repository(request).is_ready() and not lifecycle(request).draining
    return JSONBody({"ready": ready}, status_code=200 if ready else 503)
