"""`GET /`: a page to try every model from a browser (service/web/, no build step, no CDN).

Scripts and styles are separate files under /static/, so the page runs under a strict
Content-Security-Policy with no inline code (the other security headers come from
service.http.security_headers, on every response). With API keys on, the page and its files stay
public and the page asks for a key before it calls the API (kept in the tab's sessionStorage).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})


def static_files() -> StaticFiles:
    """/static/: the page's script, stylesheet and icons."""
    return StaticFiles(directory=WEB_DIR / "static")
