"""`GET /api/v1/models`: what modelserve adds to TF Serving's status JSON, which must stay
exactly as TF Serving writes it (its clients reject unknown fields)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.core.routing import Servable
from service.http.dependencies import repository
from service.http.json_io import JSONBody

router = APIRouter(prefix="/api/v1", tags=["modelserve"], default_response_class=JSONBody)


@router.get("/models", summary="Models, versions, states, placement and batching counters")
async def models_overview(request: Request) -> JSONBody:
    return JSONBody(
        {
            "models": [
                {
                    "name": model.name,
                    "ready": model.ready,
                    "version_policy": model.config.version_policy.describe(),
                    "version_labels": model.config.version_labels,
                    "versions": [_version(v) for v in model.versions],
                    # folders that look like versions but are not served, and why
                    "ignored_folders": model.ignored_folders,
                    # exported by the server (coming, or failed), while it has no version
                    "export": model.export_note.as_json() if model.export_note else None,
                }
                for model in repository(request).models()
            ]
        }
    )


def _version(servable: Servable) -> dict[str, Any]:
    return {
        "version": servable.version,
        "state": servable.state.value,
        "error": servable.error_message or None,
        "load_seconds": round(servable.load_seconds, 3),
        "warmup_seconds": round(servable.warmup_seconds, 3),
        **servable.serving_details(),
    }
