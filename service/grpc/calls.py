"""What every gRPC servicer's calls share: the servicer's parts, one observed call per method
(metrics, access log, a failure as its gRPC status), and the client's deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

import grpc
from google.protobuf import message
from google.protobuf.message import DecodeError

from service.core.decoding import Decoder
from service.core.dtypes import Arrays
from service.core.inference import InferenceCore
from service.core.record import RequestRecord
from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    PayloadTooLargeError,
    ServingError,
)
from service.grpc import message_split
from service.grpc.message_split import MessageSplitter, Strings
from service.metrics import Metrics
from service.observer import CLIENT_GONE, Finished, log_failure, observe

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=message.Message)
Context: TypeAlias = grpc.aio.ServicerContext


@dataclass(eq=False)
class Servicer:
    """What every servicer's calls use."""

    SERVICE: ClassVar[str]
    core: InferenceCore
    metrics: Metrics
    decoder: Decoder
    splitter: MessageSplitter
    max_message_bytes: int

    def check_answer_size(self, size: int) -> None:
        """gRPC would fail a larger answer with no reason the client can act on."""
        if size > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"the answer would be {size} bytes, more than grpc_max_message_bytes "
                f"({self.max_message_bytes}); ask for fewer rows, or fewer outputs "
                "(output_filter)"
            )

    async def serialized(self, outputs: Arrays, build: Callable[[], message.Message]) -> bytes:
        """The answer `build` makes for `outputs`, serialized off the event loop when large;
        refused before the work when the outputs alone are too large to send."""
        size = sum(array.nbytes for array in outputs.values())
        self.check_answer_size(size)
        answer: bytes = await self.decoder.run(size, lambda: build().SerializeToString())
        self.check_answer_size(len(answer))
        return answer

    async def parse(
        self, kind: type[M], raw: bytes, *, split_strings: bool = True
    ) -> tuple[M, dict[str, Strings]]:
        """A request parsed off the event loop, with the bulk a large one was split into (TF
        Serving's messages, whose strings are each a Python object: service.grpc.message_split)."""

        def parse() -> tuple[M, dict[str, Strings]]:
            split = None
            if split_strings and len(raw) > message_split.INLINE_BYTES:
                split = self.splitter.split(kind.DESCRIPTOR.full_name, raw)
            body, strings = (raw, {}) if split is None else (split.rest, split.strings)
            try:
                return kind.FromString(body), strings
            except DecodeError as exc:
                raise InvalidInputError(
                    f"the request is not a valid {kind.__name__}: {exc}"
                ) from None

        return await self.decoder.run(len(raw), parse)


DEADLINE_TRANSIT_SECONDS = 0.25  # see `_ended_by_client`


def _ended_by_client(context: Context) -> grpc.StatusCode:
    """Why gRPC cancelled a call. The server counts the client's deadline from when the headers
    arrive, so it ends later by the transit (63 ms on a busy 2-core machine); a client whose
    deadline passes resets the stream as it would to cancel: a cancellation with less than
    DEADLINE_TRANSIT_SECONDS left is the deadline's."""
    remaining = context.time_remaining()
    if remaining is not None and remaining < DEADLINE_TRANSIT_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


Work: TypeAlias = Callable[[Any, Any, Context, RequestRecord], Awaitable[T]]


def observed(work: Work[T]) -> Callable[[Any, Any, Context], Awaitable[T]]:
    """A servicer method as one observed call, given its record; a failure aborts the call with
    its gRPC status."""

    async def method(self: Servicer, request: Any, context: Context) -> T:
        route = f"/{self.SERVICE}/{work.__name__}"
        started = time.perf_counter()
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        record = RequestRecord(str(request_id)[:128] or "-")
        code, status = grpc.StatusCode.OK, 200
        try:
            return await work(self, request, context, record)
        except ServingError as exc:
            code, status = grpc.StatusCode[exc.code], exc.http_status
            log_failure(route, exc)
            await context.abort(code, exc.message)
            raise  # abort() raises; this line only tells type checkers so
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client cancels or its deadline passes first
            code = _ended_by_client(context)
            status = 504 if code is grpc.StatusCode.DEADLINE_EXCEEDED else CLIENT_GONE
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, status = grpc.StatusCode.INTERNAL, 500
            log.exception("%s failed", route)
            await context.abort(code, f"internal error: {type(exc).__name__}")
            raise
        finally:
            seconds = time.perf_counter() - started
            finished = Finished("grpc", "grpc", route, route, code.name, status, seconds)
            observe(self.metrics, record, finished)

    return method


def check_wanted(context: Context) -> None:
    """Raises when the call ended while it was being decoded: gRPC cancels the handler only at
    its next await, and an await on finished work returns at once."""
    if context.cancelled() or context.done():
        raise asyncio.CancelledError
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError("the deadline passed while the request was being decoded")


def timeout_ms(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0) * 1000
