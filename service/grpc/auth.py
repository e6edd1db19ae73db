"""API keys on gRPC: the REST keys, from the metadata (`authorization: Bearer <key>` or
`x-api-key: <key>`); a call without an accepted key ends UNAUTHENTICATED before any servicer.
The public services (reflection, and health unless `auth_health`) need no key."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc

from service.auth import MISSING_KEY, WRONG_KEY, ApiKeys, presented_key
from service.grpc.limits import Continuation, behavior_field


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: ApiKeys, public_services: Collection[str]) -> None:
        self._keys = keys
        self._public = frozenset(public_services)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        service = details.method.lstrip("/").partition("/")[0]  # "/package.Service/Method"
        if service in self._public:
            return await continuation(details)
        metadata: dict[str, Any] = {}
        for key, value in details.invocation_metadata or ():
            metadata.setdefault(key, value)
        presented = presented_key(metadata.get("authorization"), metadata.get("x-api-key"))
        handler = await continuation(details)
        if handler is None or self._keys.accepts(presented):
            return handler  # None: an unknown method, UNIMPLEMENTED as without keys
        message = WRONG_KEY if presented is not None else MISSING_KEY

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        # the same kind of handler (unary or streaming, each way), never reading the request
        return handler._replace(**{behavior_field(handler): refuse})
