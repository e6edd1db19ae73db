"""API keys (off by default) and who needs one for which REST path (the REST middleware,
service.http.middleware, asks `AccessPolicy.admit`): with keys, every path needs one except the
page, its files and the API docs, and (unless `auth_health`/`auth_metrics`) the probes and
/metrics; unknown paths too, so a new route is protected by default. Admin routes always need a
key with keys on, and answer 403 without keys unless `admin_without_keys`."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from service.settings import Settings

MIN_KEY_LENGTH = 16
_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: travels unchanged in headers and metadata
ADMIN_PREFIX = "/admin"
# set on an admitted admin request: service.http.admin refuses without it (no middleware)
ADMIN_GRANTED = "modelserve.admin_granted"

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
    """The keys' SHA-256 digests. A presented key's digest is compared with each by
    `hmac.compare_digest`, never stopping at a match: the time taken says nothing of the key."""

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
    """The token of `Authorization: Bearer <token>` (any case), else `X-API-Key`; another
    scheme (a proxy's Basic) is ignored."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def load_api_keys(api_keys: SecretStr | None, api_keys_file: Path | None) -> ApiKeys | None:
    """Keys from MODELSERVE_API_KEYS (comma-separated) and the file (one a line, `#` comments);
    None when neither is set. A setting given without a key fails closed (an error)."""
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
    """An error names where the key is, never the key."""
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
        return path in self.public_paths or path.startswith(PUBLIC_PREFIXES)

    def admit(self, scope: Scope) -> Refusal | None:
        """None lets an HTTP or websocket request through (an admin one marked as granted, for
        service.http.admin); else what refuses it (`service.http.middleware` answers it)."""
        path = route_path(scope)
        admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        refusal = self._refusal(scope, path, admin)
        if refusal is None and admin:
            scope[ADMIN_GRANTED] = True
        return refusal

    def _refusal(self, scope: Scope, path: str, admin: bool) -> Refusal | None:
        keys = self.keys
        if keys is None:
            disabled = admin and not self.admin_without_keys
            return Refusal(403, ADMIN_DISABLED, {}) if disabled else None
        if not admin and self.is_public(path):
            return None
        headers = Headers(scope=scope)  # the first of each name, as latin-1 text
        presented = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        if keys.accepts(presented):
            return None
        if presented is None:
            return Refusal(401, MISSING_KEY, {"WWW-Authenticate": 'Bearer realm="modelserve"'})
        challenge = 'Bearer realm="modelserve", error="invalid_token"'
        return Refusal(401, WRONG_KEY, {"WWW-Authenticate": challenge})


class Refusal(NamedTuple):
    """A request `AccessPolicy.admit` turns away: 401 with `WWW-Authenticate: Bearer` for a
    missing or wrong key, 403 for disabled admin routes."""

    status: int
    message: str
    headers: dict[str, str]

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": self.message[:120]})
            return
        response = JSONResponse(
            {"error": self.message}, status_code=self.status, headers=self.headers
        )
        await response(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path without the app's root_path, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path
