"""API docs (Swagger UI at /docs, ReDoc at /redoc) from fastapi-offline's copies of their
scripts: no CDN, so they work offline and under their CSP (service.http.security_headers). ReDoc's
script is served with the CDN logo of its sidebar credit replaced by an empty `data:` image."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static-offline-docs"  # public with API keys on (service.auth.PUBLIC_PREFIXES)
REDOC_JS = "redoc.standalone.js"
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'/%3E"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app, root = request.app, request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app, root = request.app, request.scope.get("root_path", "").rstrip("/")
    return get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,  # fonts from Google: blocked by the policy, and not offline
    )


# matched before the assets' mount (service.http.app) which serves the original; HEAD as it does
@router.api_route(f"{ASSETS_URL}/{REDOC_JS}", methods=["GET", "HEAD"])
async def redoc_script() -> Response:
    return Response(redoc_without_cdn(), media_type="text/javascript")


@cache
def redoc_without_cdn() -> bytes:
    """About 1 MB, read once."""
    return (ASSETS_DIR / REDOC_JS).read_bytes().replace(REDOC_CDN_LOGO, EMPTY_IMAGE)


def assets() -> StaticFiles:
    return StaticFiles(directory=ASSETS_DIR)
