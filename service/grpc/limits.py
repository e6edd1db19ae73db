"""A bound on the gRPC calls handled at once, refused RESOURCE_EXHAUSTED with a reason.

gRPC core's own queue sheds calls at random past 1,000 (CANCELLED, no detail, nothing logged),
so its limits are raised (`core_queue_options`) and calls beyond `limit` are refused here:
counted in modelserve_grpc_refused_total{reason="concurrency"} and logged (throttled)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def core_queue_options(limit: int) -> list[tuple[str, int]]:
    """gRPC core's queue of calls not yet picked up: well above `limit`, so calls are refused
    here with a reason, not dropped there."""
    pending = max(4 * limit, 10_000)
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
    ]


class ConcurrencyLimit(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, limit: int, count_refusal: Callable[[], None]) -> None:
        self.limit = limit
        self.active = 0
        self._count_refusal = count_refusal
        self._unlogged = 0
        self._logged_at = float("-inf")

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
            return handler
        # the decision is made when the call starts, on the event loop: no race with others
        field = behavior_field(handler)
        limited = self._unary if field == "unary_unary" else self._streaming
        return handler._replace(**{field: limited(getattr(handler, field))})

    def _unary(self, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._admit(context)
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                self.active -= 1

        return limited

    def _streaming(self, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def limited(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._admit(context)
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):  # writes with context.write
                    await result
                elif hasattr(result, "__aiter__"):
                    async for message in result:
                        yield message
                else:
                    for message in result:
                        yield message
            finally:
                self.active -= 1

        return limited

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self.active < self.limit:
            self.active += 1
            return
        self._count_refusal()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_SECONDS:
            log.warning(
                "gRPC: %d call(s) refused: %d handled at once (grpc_max_concurrent_rpcs)",
                self._unlogged,
                self.limit,
            )
            self._unlogged = 0
            self._logged_at = now
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server is handling its limit of {self.limit} calls at once; retry shortly",
        )


def behavior_field(handler: grpc.RpcMethodHandler) -> str:
    """The handler's field holding its behavior: unary_unary, unary_stream, stream_unary..."""
    request = "stream" if handler.request_streaming else "unary"
    response = "stream" if handler.response_streaming else "unary"
    return f"{request}_{response}"
