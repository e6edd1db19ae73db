"""Security headers on every response: nosniff, no referrer, no framing, HSTS on HTTPS, and a
CSP: a page's own (service.http.web) is kept; API answers, never pages, get one allowing nothing;
/docs and /redoc allow their inline scripts by hash, and inline styles (set at run time)."""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import route_path

COMMON_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=31536000"
# what a page on an allowed origin may send and read (with CORS on)
CORS_ALLOW_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "X-Request-ID",
    "X-Request-Timeout",
]
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After"]
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_COMMON_RAW = tuple((name.lower().encode(), value.encode()) for name, value in COMMON_HEADERS)
_HSTS_RAW = (b"strict-transport-security", HSTS.encode())
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_csp(page: bytes) -> str:
    """Scripts from the server and the page's own inline scripts (by hash) only."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def docs_page(scope: Scope, send: Send) -> Send | None:
    """For /docs and /redoc, a `send` adding the page's headers (its CSP has the hashes of its
    inline scripts); None for any other path, whose answers get `add_headers(..., API_CSP)`."""
    return _DocsPage(scope, send) if route_path(scope) in DOCS_PATHS else None


def add_headers(start: Message, csp: str, https: bool) -> None:
    """To a response's start, each of the headers it does not set itself (a page keeps its
    own CSP), in this order after its own."""
    headers = response_headers(start)
    present = {name for name, _ in headers}
    added = [*_COMMON_RAW, (b"content-security-policy", csp.encode("latin-1"))]
    if https:
        added.append(_HSTS_RAW)
    headers.extend(header for header in added if header[0] not in present)


def response_headers(start: Message) -> list[tuple[bytes, bytes]]:
    """The start's raw headers as a list to add to (an app may send any iterable)."""
    headers = start["headers"]
    if not isinstance(headers, list):
        headers = start["headers"] = list(headers)
    return headers


class SecurityHeaders:
    """ASGI middleware adding them, for when CORS sits between it and the REST middleware
    (service.http.app); without CORS, service.http.middleware adds them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = docs_page(scope, send)
        if docs is not None:
            await self.app(scope, receive, docs)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_headers(message, API_CSP, https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _DocsPage:
    """A `send` holding a docs page's start until its body (a few KB) is complete: its CSP
    holds the hashes of its inline scripts."""

    def __init__(self, scope: Scope, send: Send) -> None:
        self._send = send
        self._https = scope.get("scheme") == "https"
        self._start: Message | None = None
        self._body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._body += message.get("body", b"")
        if message.get("more_body", False):
            return
        add_headers(self._start, docs_csp(bytes(self._body)), self._https)
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": bytes(self._body)})
