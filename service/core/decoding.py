"""Decoding off the shared event loop, in a thread pool under a memory budget (`Decoder.run`),
the work cut into chunks (`asarray`, `object_array`, `release`, `service.http.json_pieces`) with
a `checkpoint()` between them: one long GIL-holding C call would stall the loop as surely.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from service.errors import QueueFullError

T = TypeVar("T")

EXPANSION = 32  # decoded memory per byte of JSON text at most (Python floats and list slots)
CHUNK_ITEMS = 65536  # values converted or freed per GIL-holding call (a few ms)

_abandoned: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "decode_abandoned", default=None
)


class MixedKindsError(TypeError):
    """`asarray`: chunks of kinds numpy would join into objects or strings (no input takes)."""


class DecodeAbandonedError(Exception):
    """Raised at a checkpoint of work whose caller no longer waits for it."""


class CollectorPause(contextlib.ContextDecorator):
    """Cyclic garbage collection, paused while any large decode runs: its full passes walk the
    millions of lists of a 60 MB body with the GIL held (hundreds of ms beside TensorFlow's
    heap). JSON makes no reference cycles, so nothing is lost by pausing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._running += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._was_enabled:
                gc.enable()


collector_pause = CollectorPause()


def checkpoint() -> None:
    """Between two chunks of pool work: stops it if its caller has gone, else hands the GIL
    over (the interpreter's own switch let 240 1-ms orjson pieces stall the loop 210 ms);
    a no-op inline."""
    flag = _abandoned.get()
    if flag is None:
        return
    if flag.is_set():
        raise DecodeAbandonedError
    time.sleep(0)


class Decoder:
    """The decode pool, admitting work while its estimated memory fits `memory_bytes`; beyond,
    work waits, and once as much again is waiting, is refused (429). Small payloads
    (`inline_bytes`) are decoded inline: a thread hop would cost more."""

    def __init__(self, threads: int, memory_bytes: int, inline_bytes: int) -> None:
        self.inline_bytes = inline_bytes
        self.memory_bytes = memory_bytes
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.busy_bytes = 0  # estimated memory of the work in the pool
        self._waiting = 0  # ... and of the work waiting for its turn
        self._waiters: list[asyncio.Future[None]] = []

    def runs_inline(self, size: int) -> bool:
        return size <= self.inline_bytes

    async def run(self, size: int, work: Callable[[], T]) -> T:
        """`work()`, whose payload is `size` bytes: inline when small, else in the pool once
        the budget allows. Cancelling the caller makes `work` stop at its next checkpoint."""
        if self.runs_inline(size):
            return work()
        cost = min(size * EXPANSION, self.memory_bytes)  # a huge body takes the whole budget
        await self._reserve(cost)
        loop = asyncio.get_running_loop()
        flag = threading.Event()
        context = contextvars.copy_context()
        context.run(_abandoned.set, flag)
        future = self._executor.submit(context.run, collector_pause(work))
        # the memory is free once the work has ended, not when its caller stops waiting
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._free, cost))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            flag.set()
            raise

    async def _reserve(self, cost: int) -> None:
        if self.busy_bytes + cost > self.memory_bytes and self._waiting + cost > self.memory_bytes:
            raise QueueFullError(
                "the server is decoding as many large requests as its memory allows "
                "(decode_memory_bytes); retry shortly"
            )
        self._waiting += cost
        try:
            while self.busy_bytes + cost > self.memory_bytes:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
        finally:
            self._waiting -= cost
        self.busy_bytes += cost

    def _free(self, cost: int) -> None:
        self.busy_bytes -= cost
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def asarray(value: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """`np.asarray(value, dtype)` for nested lists, a chunk of rows at a time; numpy's own
    errors (ragged rows) are raised as they are."""
    if not isinstance(value, list):
        return np.asarray(value, dtype=dtype)
    step = max(1, CHUNK_ITEMS // _row_size(value))
    if len(value) <= step:
        return np.asarray(value, dtype=dtype)
    parts = []
    for start in range(0, len(value), step):
        checkpoint()
        parts.append(np.asarray(value[start : start + step], dtype=dtype))
    if len({part.shape[1:] for part in parts}) > 1:
        raise ValueError("rows of different shapes")
    kinds = {part.dtype.kind for part in parts}
    if len(kinds) > 1 and not kinds <= set("biuf"):  # numbers in some chunks, not in others
        raise MixedKindsError(f"chunks of kinds {sorted(kinds)}")
    dtype = np.result_type(*parts)
    joined = np.empty((len(value), *parts[0].shape[1:]), dtype=dtype)
    for start, part in zip(range(0, len(value), step), parts, strict=True):
        joined[start : start + len(part)] = part  # one copy at a time, not one long concatenate
    return joined


def _row_size(rows: list[Any]) -> int:
    """Elements in the first row, assuming the others are alike (ragged ones fail anyway)."""
    size = 1
    row = rows[0] if rows else None
    while isinstance(row, list) and row:
        size *= len(row)
        row = row[0]
    return size


def object_array(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of `items` (strings), filled a chunk at a time."""
    array = np.empty(len(items), dtype=object)
    for start in range(0, len(items), CHUNK_ITEMS):
        checkpoint()
        array[start : start + CHUNK_ITEMS] = items[start : start + CHUNK_ITEMS]
    return array


def release(document: Any) -> None:
    """Empties a parsed JSON document a chunk at a time: dropping 10 M floats at once holds
    the GIL for a third of a second. Only containers are visited, never the numbers."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            item.clear()
        elif isinstance(item, list) and item and isinstance(item[0], list | dict):
            stack.extend(item)
            item.clear()
        elif isinstance(item, list):
            while item:
                del item[-CHUNK_ITEMS:]
