"""API keys on gRPC: a `grpc.aio` server interceptor taking the same keys as REST from the call's
metadata (`authorization: Bearer <key>` or `x-api-key: <key>`); a call without an accepted key
ends with UNAUTHENTICATED before it reaches a servicer.

Public services (named by the caller, see service.grpc.server) need no key: server reflection
always (it describes the protos, as /openapi.json does), grpc.health.v1 unless `auth_health`
(probes, as /healthz and /readyz).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc

from service.auth import MISSING_KEY, WRONG_KEY, ApiKeys, presented_key

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


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
        return _refusal(handler, WRONG_KEY if presented is not None else MISSING_KEY)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind (unary or streaming, each way) that ends the call with
    UNAUTHENTICATED without reading the request."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **codecs)
    return grpc.unary_unary_rpc_method_handler(refuse, **codecs)
