"""API keys: loading them, checking a presented key, and the REST middleware that asks for one.

Keys are off by default. With keys, every REST route needs `Authorization: Bearer <key>` or
`X-API-Key: <key>` except the public ones: the web page and its static files, the API docs
(they hold no data, and the page asks for a key before it calls the API), and, unless
`auth_health` / `auth_metrics` say otherwise, the probes (`/healthz`, `/readyz`,
`/v2/health/*`) and `/metrics`. Anything else, unknown paths included, is refused with 401, so
a new route is protected without anyone remembering to protect it.

Admin routes (`/admin/...`) always need a key when keys are on, and are refused with 403 when
they are off unless `admin_without_keys` allows them: they are never open by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from service.settings import Settings

MIN_KEY_LENGTH = 16
_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: travels unchanged in headers and metadata
ADMIN_PREFIX = "/admin"
ADMIN_GRANTED = "modelserve.admin_granted"
"""Scope key the middleware sets on an admitted admin request (service.http.admin checks
it, so the admin routes refuse when the middleware is not there)."""

PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/", "/static-offline-docs/")
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
METRICS_PATHS = frozenset({"/metrics"})

MISSING_KEY = "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
WRONG_KEY = "the API key is not valid"
ADMIN_DISABLED = (
    "admin routes are disabled without API keys: set MODELSERVE_API_KEYS or "
    "MODELSERVE_API_KEYS_FILE (or MODELSERVE_ADMIN_WITHOUT_KEYS=true on a trusted network)"
)


class ApiKeyError(ValueError):
    """Keys that cannot be used; the message never contains a key."""


class ApiKeys:
    """The accepted keys, kept only as SHA-256 digests. A presented key is hashed and compared
    with every digest by `hmac.compare_digest`, without stopping at a match: the time taken
    says neither how much of a key was right, nor its length, nor which key matched."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ApiKeyError("no API keys given")

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(known, digest)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a caller sent: the token of `Authorization: Bearer <token>` (the scheme in any
    case), else `X-API-Key`. Another Authorization scheme (a proxy's Basic) is ignored."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def load_api_keys(api_keys: SecretStr | None, api_keys_file: Path | None) -> ApiKeys | None:
    """The keys of MODELSERVE_API_KEYS (comma-separated) and of the keys file (one a line,
    blank lines and `#` comments ignored); None when neither is set (keys off). A setting that
    is given but holds no key is an error, not "keys off": it fails closed."""
    keys: list[str] = []
    if api_keys is not None:
        given = [k.strip() for k in api_keys.get_secret_value().split(",")]
        keys += _checked((f"MODELSERVE_API_KEYS key {i}", k) for i, k in enumerate(given, 1) if k)
        if not keys:
            raise ApiKeyError("MODELSERVE_API_KEYS is set but lists no key (unset it for no keys)")
    if api_keys_file is not None:
        from_file = _checked(_read_key_file(api_keys_file))
        if not from_file:
            raise ApiKeyError(f"api_keys_file {api_keys_file} holds no key")
        keys += from_file
    return ApiKeys(keys) if keys else None


def _read_key_file(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ApiKeyError(f"api_keys_file {path}: cannot read: {reason}") from None
    return [
        (f"api_keys_file {path} line {number}", line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]


def _checked(keys: Iterable[tuple[str, str]]) -> list[str]:
    """The keys, each checked; an error names where the key is, never the key."""
    checked = []
    for where, key in keys:
        if not _KEY.fullmatch(key):
            raise ApiKeyError(f"{where}: a key must be visible ASCII, without spaces or commas")
        if len(key) < MIN_KEY_LENGTH:
            raise ApiKeyError(
                f"{where}: a key needs {MIN_KEY_LENGTH} characters at least "
                "(make one with `openssl rand -hex 32`)"
            )
        checked.append(key)
    return checked


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call which REST path."""

    keys: ApiKeys | None
    public_paths: frozenset[str] = PUBLIC_PATHS | HEALTH_PATHS | METRICS_PATHS
    public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES
    admin_without_keys: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        public = PUBLIC_PATHS
        if not settings.auth_health:
            public |= HEALTH_PATHS
        if not settings.auth_metrics:
            public |= METRICS_PATHS
        return cls(
            keys=load_api_keys(settings.api_keys, settings.api_keys_file),
            public_paths=public,
            admin_without_keys=settings.admin_without_keys,
        )

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)


class AccessControl:
    """Pure ASGI middleware applying an AccessPolicy: 401 with `WWW-Authenticate: Bearer` for
    a missing or wrong key, 403 for admin routes while they are disabled."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        keys = self.policy.keys
        admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        if admin and keys is None and not self.policy.admin_without_keys:
            await _refuse(scope, receive, send, 403, ADMIN_DISABLED)
            return
        if (
            keys is not None
            and (admin or not self.policy.is_public(path))
            and not await self._admitted(scope, receive, send, keys)
        ):
            return
        if admin:
            scope[ADMIN_GRANTED] = True
        await self.app(scope, receive, send)

    @staticmethod
    async def _admitted(scope: Scope, receive: Receive, send: Send, keys: ApiKeys) -> bool:
        """Is the request's key accepted? Answers 401 when not."""
        headers = _headers(scope)
        presented = presented_key(headers.get(b"authorization"), headers.get(b"x-api-key"))
        if keys.accepts(presented):
            return True
        challenge = 'Bearer realm="modelserve"'
        if presented is not None:
            challenge += ', error="invalid_token"'
        message = WRONG_KEY if presented is not None else MISSING_KEY
        await _refuse(scope, receive, send, 401, message, {"WWW-Authenticate": challenge})
        return False


def _headers(scope: Scope) -> dict[bytes, str]:
    """The request's headers (the first of each name), as latin-1 text like Starlette's."""
    headers: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value.decode("latin-1"))
    return headers


def route_path(scope: Scope) -> str:
    """The path the router matches: without the app's root_path (as Starlette routes)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await JSONResponse({"error": message}, status_code=status, headers=headers)(
        scope, receive, send
    )
