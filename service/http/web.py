"""`GET /`: a page to try every model from a browser (service/web/, no build step, no CDN). Its
scripts and styles are files under /static/, so it runs under a strict CSP with no inline code.
With API keys on, the page asks for one before it calls the API (kept in sessionStorage)."""

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
    return StaticFiles(directory=WEB_DIR / "static")
