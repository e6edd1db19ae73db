"""`GET /`: a page to try every model from a browser (service/web/, no build step, no CDN).

Scripts and styles are separate files under /static/, so the page runs under a strict
Content-Security-Policy with no inline code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers=SECURITY_HEADERS)


def static_files() -> StaticFiles:
    """/static/: the page's script, stylesheet and icons."""
    return StaticFiles(directory=WEB_DIR / "static")
