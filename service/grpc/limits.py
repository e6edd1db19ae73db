"""A bound on the gRPC calls handled at once, answered RESOURCE_EXHAUSTED with a detail.

Without it, a burst of calls waits in gRPC core's queue of calls the application has not
picked up yet, which sheds calls at random past 1,000 (CANCELLED, no detail, nothing logged):
1,500 concurrent calls on one channel lost 70-169 that way. The server now takes calls off
that queue at once (its limits are raised, see `core_queue_options`) and refuses those beyond
`limit` itself: counted in modelserve_grpc_refused_total{reason="concurrency"} and logged
(one line per LOG_INTERVAL_SECONDS at most, with the count).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0


def core_queue_options(limit: int) -> list[tuple[str, int]]:
    """gRPC core's queue of calls not yet picked up: well above the calls handled at once, so
    calls are refused here, with a reason, and not dropped at random there."""
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
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
            return handler
        # the decision is made when the call starts, on the event loop: no race with others
        if handler.request_streaming or handler.response_streaming:
            kind = _kind(handler)
            return handler._replace(**{kind: self._streaming(getattr(handler, kind))})
        return handler._replace(unary_unary=self._unary(handler.unary_unary))

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
        self._log_refusal()
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server is handling its limit of {self.limit} calls at once; retry shortly",
        )

    def _log_refusal(self) -> None:
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


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "stream_stream"
    return "stream_unary" if handler.request_streaming else "unary_stream"
