"""Dynamic batching: one bounded queue and one dispatcher per model version and signature.

Work-conserving: when an instance is free the dispatcher takes what is queued (up to
`max_batch_size` rows), pads it to an allowed size warmed at load, and runs it on a worker
thread. `max_batch_delay_ms` may hold a batch that is not full, and under closed-loop load a
small batch is held a fraction of a call for the clients just answered (`refill`), but never
past the earliest deadline in it. Requests are admitted or refused whole, in rows (400 too large
ever, 429 no room now, 504 could not start in time); larger than one batch, they run as chunks
that take turns with other requests. A failing batch is retried in halves, so only requests that
fail alone get the error. Callers pass numpy arrays and an event-loop deadline; nothing here
knows HTTP.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import logging
import math
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Protocol

import numpy as np

from service.core.dtypes import Arrays
from service.core.record import RequestRecord
from service.core.refill import REFILL_GAP, ReturnWatch
from service.core.serving_config import BatchingConfig
from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelFailureError,
    QueueFullError,
    ServingError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCall:
    signature: str
    inputs: Arrays
    outputs: tuple[str, ...] = ()  # the outputs to return (all when empty)
    # time left to the batch's most patient request: the deadline of a remote call (a local
    # TensorFlow call cannot be stopped once it runs)
    seconds_left: float | None = None


class Runner(Protocol):
    """One model instance: runs a signature on a batch (blocking, on a worker thread)."""

    device: str

    def run(self, call: ModelCall) -> Arrays: ...


DEADLINE_SLACK = 1.5  # a held batch closes this many average calls before its earliest deadline
CALL_TIME_WEIGHT = 0.2  # of the newest call in the moving average of call durations


class DispatchReason(Enum):
    IDLE = "idle"  # an instance was free: sent what was queued without waiting
    FULL = "full"  # max_batch_size reached
    DELAY = "delay"  # max_batch_delay_ms ran out
    DEADLINE = "deadline"  # the delay was cut short so the call ends by a request's deadline
    REFILL = "refill"  # held briefly for the clients just answered (see service/core/refill.py)


@dataclass(frozen=True)
class CallTimes:
    """The stages of one model call, in seconds: the batch's inputs assembled (concatenated and
    padded), the model run (with its outputs checked), the outputs split among the requests."""

    input: float
    compute: float
    output: float


@dataclass
class BatchStats:
    """Counters since load, per batcher: in model status (`as_json`), and in metrics (`total`)."""

    batches: int = 0
    rows: int = 0  # real rows (instances) run
    padded_rows: int = 0  # rows added to reach an allowed size
    requests: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected: int = 0
    splits: int = 0  # failed batches (or halves of one) retried as two halves
    model_errors: collections.Counter[str] = field(default_factory=collections.Counter)  # by code
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)  # padded
    rows_per_batch: collections.Counter[int] = field(default_factory=collections.Counter)
    # Times, summed in seconds (Triton's statistics extension: service.v2.statistics)
    queued: int = 0  # requests that left the queue for the model
    queue_seconds: float = 0.0  # their waits
    answered: int = 0  # requests answered with outputs
    answered_rows: int = 0
    answered_seconds: float = 0.0  # each one's time from queued to answered
    # each answered request's share of its batch's call, stage by stage (CallTimes)
    input_seconds: float = 0.0
    compute_seconds: float = 0.0
    output_seconds: float = 0.0
    failed: int = 0  # requests answered with an error by the model, or past their deadline
    failed_seconds: float = 0.0
    # successful model calls by (padded) batch size, and their stages' time
    calls_by_size: collections.Counter[int] = field(default_factory=collections.Counter)
    input_seconds_by_size: dict[int, float] = field(default_factory=dict)
    compute_seconds_by_size: dict[int, float] = field(default_factory=dict)
    output_seconds_by_size: dict[int, float] = field(default_factory=dict)
    last_answered: float = 0.0  # time.time() of the newest answer, 0 before the first

    @property
    def mean_batch_size(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    @classmethod
    def total(cls, many: Iterable[BatchStats]) -> BatchStats:
        total = cls()
        for stats in many:
            for name in (f.name for f in fields(cls)):
                mine, theirs = getattr(total, name), getattr(stats, name)
                if isinstance(mine, collections.Counter):
                    mine.update(theirs)
                elif isinstance(mine, dict):
                    for key, value in theirs.items():
                        mine[key] = mine.get(key, 0.0) + value
                elif name == "last_answered":
                    total.last_answered = max(mine, theirs)
                else:
                    setattr(total, name, mine + theirs)
        return total

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rows": self.rows,
            "padded_rows": self.padded_rows,
            "mean_batch_size": round(self.mean_batch_size, 3),
            "expired": self.expired,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "dispatch_reasons": dict(self.reasons),
            "timing": self.timing_json(),
        }

    def timing_json(self) -> dict[str, Any]:
        """The time sums (seconds), for Triton's statistics in a front-end worker."""
        names = (
            "queued", "queue_seconds", "answered", "answered_rows", "answered_seconds",
            "input_seconds", "compute_seconds", "output_seconds", "failed", "failed_seconds",
            "last_answered",
        )  # fmt: skip
        return {
            **{name: getattr(self, name) for name in names},
            "calls_by_size": {  # size: [calls, input, compute, output seconds]
                str(size): [
                    count,
                    self.input_seconds_by_size[size],
                    self.compute_seconds_by_size[size],
                    self.output_seconds_by_size[size],
                ]
                for size, count in sorted(self.calls_by_size.items())
            },
        }

    def note_dispatched(self, waits: Sequence[float]) -> None:
        self.queued += len(waits)
        self.queue_seconds += sum(waits)

    def note_answered(
        self, queued_at: Sequence[float], rows: int, size: int, times: CallTimes
    ) -> None:
        """Requests queued at `queued_at` (perf_counter), `rows` in all, answered by one model
        call on a batch of `size` rows."""
        now = time.perf_counter()
        count = len(queued_at)
        self.answered += count
        self.answered_rows += rows
        self.answered_seconds += sum(now - start for start in queued_at)
        self.input_seconds += times.input * count
        self.compute_seconds += times.compute * count
        self.output_seconds += times.output * count
        self.calls_by_size[size] += 1
        for by_size, seconds in (
            (self.input_seconds_by_size, times.input),
            (self.compute_seconds_by_size, times.compute),
            (self.output_seconds_by_size, times.output),
        ):
            by_size[size] = by_size.get(size, 0.0) + seconds
        self.last_answered = time.time()

    def note_failed(self, queued_at: Sequence[float]) -> None:
        now = time.perf_counter()
        self.failed += len(queued_at)
        self.failed_seconds += sum(now - start for start in queued_at)


class BatchObserver(Protocol):
    """Told of every model call, for latency histograms (service.metrics implements it)."""

    def dispatched(self, queue_waits: Sequence[float]) -> None: ...  # each request's wait, s

    def ran(self, seconds: float) -> None: ...  # one model call's duration


class _NoObserver:
    def dispatched(self, queue_waits: Sequence[float]) -> None:
        pass

    def ran(self, seconds: float) -> None:
        pass


class InstancePool:
    """The instances of one model version; a batch goes to the least-loaded free one."""

    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)
        self.busy = [0] * len(runners)
        self.batches_run = [0] * len(runners)
        self._free = asyncio.Condition()

    async def acquire(self) -> int:
        async with self._free:
            await self._free.wait_for(lambda: 0 in self.busy)
            free = [i for i, busy in enumerate(self.busy) if not busy]
            index = min(free, key=self.batches_run.__getitem__)
            self.busy[index] += 1
            self.batches_run[index] += 1
            return index

    async def release(self, index: int) -> None:
        async with self._free:
            self.busy[index] -= 1
            self._free.notify_all()


class _State(Enum):
    QUEUED = 1
    RUNNING = 2
    GONE = 3  # expired or cancelled while queued: the dispatcher skips it


@dataclass(eq=False)
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    deadline: float  # event loop time
    future: asyncio.Future[Arrays]
    queued_at: float  # time.perf_counter(): uvloop's loop.time() ticks in milliseconds
    row_shapes: list[tuple[int, ...]]  # its inputs' (see _row_shapes), compared while batching
    state: _State = _State.QUEUED
    batch_rows: int = 0  # real rows of the batch it ran in
    remaining: int = 0  # its rows and those of the chunks after it (its request's, if split)
    follower: _Pending | None = None  # the next chunk of a split request, queued once this is taken
    counted: bool = True  # counts against max_queue_size: a request, or its last chunk
    outputs: tuple[str, ...] = ()  # the outputs its request wants (all when empty)


class Batcher:
    def __init__(
        self,
        name: str,
        signature_name: str,
        config: BatchingConfig,
        pool: InstancePool,
        executor: Executor,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.signature_name = signature_name
        self.config = config
        self.sizes = config.batch_sizes() if config.enabled else ()
        self.pool = pool
        self.executor = executor
        self.stats = BatchStats()
        self.observer = observer or _NoObserver()
        self.running_rows = 0  # rows in model calls right now
        self.held_rows = 0  # rows of a batch max_batch_delay_ms holds open (instance taken)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._waiting = 0  # queued requests still wanting an answer (excludes gone ones)
        self._waiting_rows = 0  # their rows not yet taken, chunks not yet in the queue included
        self._waiting_alone = 0  # unbatched requests waiting for an instance
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.call_seconds = 0.0  # moving average of one model call (0 until the first)
        self._returns = ReturnWatch()

    @property
    def queued(self) -> int:
        return self._waiting + self._waiting_alone

    @property
    def queued_rows(self) -> int:
        return self._waiting_rows + self._waiting_alone

    @property
    def capacity_rows(self) -> int:  # rows the instances take at once: one full batch each
        per_call = self.config.max_batch_size if self.sizes else 1
        return per_call * len(self.pool.runners)

    def full(self) -> bool:
        return (
            self.queued >= self.config.max_queue_size
            or self.queued_rows >= self.config.queue_rows()
        )

    def check_capacity(self) -> None:
        """429 before the caller parses a body that could not be queued anyway."""
        config = self.config
        if self.queued >= config.max_queue_size:
            self._refuse(f"{self.queued} requests queued (max_queue_size {config.max_queue_size})")
        if self.queued_rows >= config.queue_rows():
            self._refuse(f"{self.queued_rows} rows queued (max_queue_rows {config.queue_rows()})")

    def check_rows(self, rows: int) -> None:
        """400 from the rows a request declares, before its values are decoded."""
        if self.config.enabled:
            check_request_rows(self.name, self.config, rows)

    def _refuse(self, why: str) -> None:
        self.stats.rejected += 1
        raise QueueFullError(f"model {self.name} has {why}; retry shortly")

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        deadline: float,
        outputs: Sequence[str] = (),
        record: RequestRecord | None = None,
    ) -> Arrays:
        """Queues one request and returns its own rows of the `outputs` it names (all when
        empty); the size of the batch that ran it goes in `record`."""
        record = record or RequestRecord("")
        self.check_capacity()
        rows = _batch_rows(inputs)
        wanted = tuple(outputs)
        if rows is None or not self.config.enabled:
            self.stats.requests += 1
            results = await self._run_alone(inputs, rows or 1, deadline, wanted)
            record.batch_size = rows or 1
            return results
        self._admit(rows, deadline)
        self.stats.requests += 1
        chunks = self._enqueue(inputs, rows, deadline, wanted, record.client_pause)
        if len(chunks) == 1:
            return await self._wait(chunks[0], record)
        # if a chunk fails, the others are cancelled rather than run for nobody
        try:
            async with asyncio.TaskGroup() as group:
                waits = [group.create_task(self._wait(chunk, record)) for chunk in chunks]
        except ExceptionGroup as failed:  # the first chunk's error is the request's error
            raise failed.exceptions[0] from None
        finally:  # chunks whose wait was cancelled before it began
            for chunk in chunks:
                if chunk.state is _State.QUEUED:
                    self._leave_queue(chunk)
        parts = [wait.result() for wait in waits]
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

    def _admit(self, rows: int, deadline: float) -> None:
        """Admits a request whole or refuses it whole: 429 unless it fits now (one of more than a
        batch must leave as many rows free, so small ones always find room); 504 at once rather
        than after running its first chunks for nothing."""
        check_request_rows(self.name, self.config, rows)
        needed = rows if rows <= self.config.max_batch_size else 2 * rows
        if needed > self.config.queue_rows() - self.queued_rows:
            share = " (as many again left for others)" if needed > rows else ""
            self._refuse(
                f"{self.queued_rows} rows queued (max_queue_rows {self.config.queue_rows()}): "
                f"a request of {_rows(rows)} needs {needed} free{share}"
            )
        left = deadline - asyncio.get_running_loop().time()
        if left > 0 and self._least_wait(rows, bound=True) <= left:
            return  # surely in time, without going through the queue
        wait = self._least_wait(rows)
        if left > 0 and wait <= left:
            return
        self.stats.expired += 1
        if left <= 0:
            raise DeadlineExceededError(f"model {self.name}: request deadline already passed")
        raise DeadlineExceededError(
            f"model {self.name}: request deadline in {left:.3f} s, but starting all its "
            f"{_rows(rows)} takes at least {wait:.3f} s (a model call of up to "
            f"{_rows(self.config.max_batch_size)} takes {self.call_seconds:.3f} s, and the "
            f"requests queued ahead take turns with it); refused without running. Retry later, "
            f"send fewer rows or allow more time"
        )

    def _least_wait(self, rows: int, *, bound: bool = False) -> float:
        """Least seconds before the last chunk of a request of `rows` rows can start: its own
        earlier chunks, and each request ahead for as many turns (batches) as it has chunks.
        With `bound`, a wait no shorter, in constant time: every row still waiting counts as
        ahead (a queued chunk's rows and its followers' are all in `_waiting_rows`)."""
        if not self.call_seconds:
            return 0.0
        limit = self.config.max_batch_size
        turns = math.ceil(rows / limit)
        if bound:
            ahead = self._waiting_rows
        else:
            ahead = sum(
                min(p.remaining, turns * limit) for p in self._queue if p.state is _State.QUEUED
            )
        batches = math.ceil(ahead / limit) + turns - 1
        return batches // len(self.pool.runners) * self.call_seconds

    def _enqueue(
        self,
        inputs: Arrays,
        rows: int,
        deadline: float,
        outputs: tuple[str, ...],
        client_pause: float | None,
    ) -> list[_Pending]:
        """Queues the first chunk (of max_batch_size rows at most) of an admitted request; each
        next one joins the back of the queue when the one before it is taken (see _take)."""
        loop = asyncio.get_running_loop()
        limit = self.config.max_batch_size
        queued_at = time.perf_counter()
        row_shapes = _row_shapes(inputs)
        chunks = [
            _Pending(
                {k: v[start : start + limit] for k, v in inputs.items()},  # views, no copies
                min(limit, rows - start),
                deadline,
                loop.create_future(),
                queued_at,
                row_shapes,
                remaining=rows - start,
                counted=start + limit >= rows,
                outputs=outputs,
            )
            for start in range(0, rows, limit)
        ]
        for chunk, follower in itertools.pairwise(chunks):
            chunk.follower = follower
        self._waiting += 1
        self._waiting_rows += rows
        if self.config.refill:  # only refill reads the watch
            # before the first call the hold's length is not known: only QUICK_PAUSE_MAX bounds it
            hold = self.config.refill_hold * self.call_seconds if self.call_seconds else math.inf
            self._returns.arrived(rows, client_pause, hold)
        self._queue.append(chunks[0])
        self._arrived.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(
                self._dispatch_forever(), name=f"batcher-{self.name}-{self.signature_name}"
            )
        return chunks

    async def _wait(self, pending: _Pending, record: RequestRecord) -> Arrays:
        # a timer rather than asyncio.wait_for(asyncio.shield(...)): those cost each request
        # two futures more and a task-like wrapper; a request cancelled while it runs leaves
        # the batch to answer the others (its future is skipped when cancelled)
        timer = asyncio.get_running_loop().call_at(pending.deadline, self._expire_queued, pending)
        try:
            outputs = await pending.future
        except asyncio.CancelledError:
            if pending.state is _State.QUEUED:  # the caller went away: drop it
                self._leave_queue(pending)
                self.stats.cancelled += 1
            raise
        finally:
            timer.cancel()
        record.batch_size = pending.batch_rows
        return outputs

    def _expire_queued(self, pending: _Pending) -> None:
        """At a request's deadline: 504 if still queued; once running, its answer is on the way."""
        if pending.state is not _State.QUEUED or pending.future.done():
            return
        self._leave_queue(pending)
        self.stats.expired += 1
        self.stats.note_failed([pending.queued_at])
        _set_error(
            pending.future,
            DeadlineExceededError(f"model {self.name}: request deadline passed while queued"),
        )

    def _leave_queue(self, pending: _Pending) -> None:  # the dispatcher skips it later
        pending.state = _State.GONE
        self._waiting -= pending.counted
        self._waiting_rows -= pending.rows

    async def _run_alone(
        self, inputs: Arrays, rows: int, deadline: float, outputs: tuple[str, ...]
    ) -> Arrays:
        """Batching disabled, or inputs without a common batch dimension: one call."""
        loop = asyncio.get_running_loop()
        queued_at = time.perf_counter()
        self._waiting_alone += 1  # counts against max_queue_size while waiting
        try:
            index = await asyncio.wait_for(self.pool.acquire(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.stats.expired += 1
            self.stats.note_failed([queued_at])
            raise DeadlineExceededError(
                f"model {self.name}: request deadline passed while queued"
            ) from None
        finally:
            self._waiting_alone -= 1
        wait = [time.perf_counter() - queued_at]
        self.observer.dispatched(wait)
        self.stats.note_dispatched(wait)
        self._count(rows, 0, DispatchReason.IDLE)
        self.running_rows += rows
        try:
            started = time.perf_counter()
            results = await self._execute(self.pool.runners[index], inputs, deadline, outputs)
            # alone: nothing to assemble or split
            times = CallTimes(0.0, time.perf_counter() - started, 0.0)
            self.stats.note_answered([queued_at], rows, rows, times)
        except ServingError:
            self.stats.note_failed([queued_at])
            raise
        finally:
            self.running_rows -= rows
            await self.pool.release(index)
        return results

    async def stop(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch_forever(self) -> None:
        while True:
            while self._queue and self._queue[0].state is _State.GONE:
                self._queue.popleft()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            index = await self.pool.acquire()
            try:
                batch, reason = await self._collect()
            except BaseException:
                await self.pool.release(index)
                raise
            finally:
                self.held_rows = 0
            if not batch:
                await self.pool.release(index)
                continue
            # running from now on, so the rows never vanish from saturation before the call
            self.running_rows += sum(p.rows for p in batch)
            task = asyncio.create_task(self._run(index, batch, reason))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self, batch: list[_Pending], rows: int) -> int:
        """Moves queued requests into `batch` while they fit; returns the rows now in it."""
        loop_time = asyncio.get_running_loop().time()
        while self._queue:
            head = self._queue[0]
            # an expired request's waiter answers 504 (and frees the slot)
            if head.state is _State.GONE or head.deadline <= loop_time:
                self._queue.popleft()
                continue
            if rows + head.rows > self.config.max_batch_size:
                break
            if batch and head.row_shapes != batch[0].row_shapes:
                break  # one tensor per input: it goes first in the next batch
            self._queue.popleft()
            head.state = _State.RUNNING
            self._waiting -= head.counted
            self._waiting_rows -= head.rows
            batch.append(head)
            rows += head.rows
            if head.follower is not None and head.follower.state is _State.QUEUED:
                # behind whatever was queued meanwhile: a split request takes turns
                self._queue.append(head.follower)
        return rows

    async def _collect(self) -> tuple[list[_Pending], DispatchReason]:
        batch: list[_Pending] = []
        rows = self._take(batch, 0)
        limit = self.config.max_batch_size
        if rows >= limit:
            return batch, DispatchReason.FULL
        if not batch:
            return batch, DispatchReason.IDLE
        now = asyncio.get_running_loop().time()
        delay = self.config.max_batch_delay_ms / 1000
        expected = self._returns.expected(now, self.call_seconds) if self.config.refill else 0
        refill = self.config.refill_hold * self.call_seconds if expected else 0.0
        if refill > delay:  # hold for the clients just answered, while they keep coming back
            target = min(limit, rows + expected)
            gap = REFILL_GAP * self.call_seconds  # the answered clients come back in a burst
            return await self._hold(batch, rows, target, now + refill, gap, DispatchReason.REFILL)
        if delay > 0:
            return await self._hold(batch, rows, limit, now + delay, math.inf, DispatchReason.DELAY)
        return batch, DispatchReason.IDLE

    async def _hold(
        self,
        batch: list[_Pending],
        rows: int,
        target: int,
        end: float,
        after_first: float,
        reason: DispatchReason,
    ) -> tuple[list[_Pending], DispatchReason]:
        """Keeps taking arrivals into `batch` until it has `target` rows, `end` comes, or, once
        a request arrived, none arrives for `after_first` seconds; the instance stays reserved
        meanwhile."""
        loop = asyncio.get_running_loop()
        gap = math.inf  # no limit before the first arrival
        while rows < target:
            # never so late that the model call would end past the deadline of a request in
            # the batch (including ones that joined): a gRPC client stops waiting right then
            close_by = min(p.deadline for p in batch) - DEADLINE_SLACK * self.call_seconds
            why = DispatchReason.DEADLINE if close_by < end else reason
            remaining = min(close_by, end) - loop.time()
            if remaining <= 0:
                return batch, why
            self.held_rows = rows
            self._arrived.clear()
            try:  # the first arrival may take the whole hold, the next ones no more than `gap`
                await asyncio.wait_for(self._arrived.wait(), min(remaining, gap))
            except TimeoutError:
                return batch, why
            rows, gap = self._take(batch, rows), after_first
        return batch, DispatchReason.FULL if rows >= self.config.max_batch_size else reason

    async def _run(self, index: int, batch: list[_Pending], reason: DispatchReason) -> None:
        rows = sum(p.rows for p in batch)
        now = time.perf_counter()
        waits = [now - p.queued_at for p in batch]
        self.observer.dispatched(waits)
        self.stats.note_dispatched(waits)
        try:  # running_rows was raised by the dispatcher
            self._count(rows, self._padded_size(rows) - rows, reason)
            await self._run_group(self.pool.runners[index], batch)
            if self.config.refill:
                self._returns.answered(rows, asyncio.get_running_loop().time())
        finally:
            self.running_rows -= rows
            await self.pool.release(index)

    async def _run_group(self, runner: Runner, group: list[_Pending]) -> None:
        """One model call for the requests; when one odd input fails it, each half is retried
        on its own, recursively, so only the requests failing alone get the error."""
        rows = sum(p.rows for p in group)
        for pending in group:
            pending.batch_rows = rows
        size = self._padded_size(rows)
        assembling = time.perf_counter()
        inputs = _assemble([p.inputs for p in group], rows, size)
        deadline = max(p.deadline for p in group)  # the most patient request's
        started = time.perf_counter()
        try:
            outputs = await self._execute(runner, inputs, deadline, _wanted_by(group), size)
        except (InvalidInputError, ModelFailureError) as exc:
            if len(group) == 1:
                self._fail(group, exc)
                return
            self.stats.splits += 1
            middle = len(group) // 2
            for half in (group[:middle], group[middle:]):
                if not self._expire(half):
                    await self._run_group(runner, half)
            return
        except ServingError as exc:
            self._fail(group, exc)
            return
        ran = time.perf_counter()
        start = 0
        for pending in group:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end
        times = CallTimes(started - assembling, ran - started, time.perf_counter() - ran)
        self.stats.note_answered([p.queued_at for p in group], rows, size, times)

    def _expire(self, group: list[_Pending]) -> bool:
        """504 instead of a retry nobody would wait for; True if every request is late."""
        now = asyncio.get_running_loop().time()
        if any(p.deadline > now for p in group):
            return False
        self.stats.expired += len(group)
        error = DeadlineExceededError(
            f"model {self.name}: request deadline passed before its failed batch was retried"
        )
        self._fail(group, error)
        return True

    def _fail(self, group: list[_Pending], error: BaseException) -> None:
        self.stats.note_failed([p.queued_at for p in group])
        _fail(group, error)

    def _padded_size(self, rows: int) -> int:
        return self.sizes[bisect.bisect_left(self.sizes, rows)]

    async def _execute(
        self,
        runner: Runner,
        inputs: Arrays,
        deadline: float,
        outputs: tuple[str, ...],
        size: int = 0,
    ) -> Arrays:
        """One timed call on a worker thread, checked for one output row per input row of a
        batch of `size`, if given. Every failure becomes a ServingError, counted by code."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        call = ModelCall(self.signature_name, inputs, outputs, max(0.0, deadline - loop.time()))
        try:
            results = await loop.run_in_executor(self.executor, runner.run, call)
            for name, array in results.items():
                if size and (array.ndim == 0 or array.shape[0] != size):
                    raise ModelFailureError(
                        f"output {name!r} has shape {list(array.shape)}: not one row per input "
                        f"row ({size}); set batching.enabled: false for this model"
                    )
            return results
        except ServingError as exc:
            self.stats.model_errors[exc.code] += 1
            raise
        except Exception as exc:
            log.exception("model call of %s failed", self.name)
            self.stats.model_errors[ModelFailureError.code] += 1
            raise ModelFailureError(f"model {self.name} failed: {exc}") from exc
        finally:
            seconds = time.perf_counter() - started
            self.observer.ran(seconds)
            weight = CALL_TIME_WEIGHT if self.call_seconds else 1.0
            self.call_seconds += weight * (seconds - self.call_seconds)

    def _count(self, rows: int, padding: int, reason: DispatchReason) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.padded_rows += padding
        stats.reasons[reason.value] += 1
        stats.batch_sizes[rows + padding] += 1
        stats.rows_per_batch[rows] += 1


def check_request_rows(name: str, config: BatchingConfig, rows: int) -> None:
    """400 for a request no retry could ever get admitted: more than one full batch, or half
    the queue's row bound (a larger request must leave as many rows free as it takes)."""
    limit = max(config.max_batch_size, config.queue_rows() // 2)
    if rows > limit:
        raise InvalidInputError(
            f"model {name}: a request of {rows} rows is more than one request may "
            f"queue, {_rows(limit)} (half of max_queue_rows {config.queue_rows()}, or "
            f"max_batch_size {config.max_batch_size} if more); split it into "
            f"requests of at most {_rows(limit)}"
        )


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _batch_rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The inputs' common batch dimension, if any."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    rows = sizes.pop() if len(sizes) == 1 else None
    return rows or None


def _row_shapes(inputs: Arrays) -> list[tuple[int, ...]]:
    """The shape of one row of each input: only requests alike in it concatenate into a
    batch (a signature with an unknown inner dimension admits rows of different widths)."""
    return [array.shape[1:] for array in inputs.values()]


def _assemble(requests: list[Arrays], rows: int, size: int) -> Arrays:
    """Concatenates the requests' inputs and pads to `size` by repeating the last row (a valid
    input, unlike zeros for, say, an image decoder)."""
    assembled = {}
    for name in requests[0]:
        parts = [request[name] for request in requests]
        if size > rows:
            parts.append(np.repeat(parts[-1][-1:], size - rows, axis=0))
        assembled[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return assembled


def _wanted_by(group: list[_Pending]) -> tuple[str, ...]:
    """Every output one of the requests names, or all when one wants all (converting an unwanted
    output costs time: millions of strings become Python objects holding the GIL)."""
    if any(not pending.outputs for pending in group):
        return ()
    return tuple(dict.fromkeys(name for pending in group for name in pending.outputs))


def _set_error(future: asyncio.Future[Arrays], error: BaseException) -> None:
    """`error` as the request's answer, marked as read (a waiting caller still gets it). A
    caller that leaves cancels the future it awaits, but the wait of a split request's chunk
    may be cancelled before it began: then nobody reads the error, and asyncio would log it as
    never retrieved. Marked here rather than by a done callback on every request's future,
    which cost each answer a callback on the loop."""
    future.set_exception(error)
    future.exception()


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            _set_error(pending.future, error)


def deadline_from(timeout_ms: float | None, default_ms: float) -> float:
    """Event-loop time by which a request must have started."""
    seconds = (timeout_ms if timeout_ms is not None else default_ms) / 1000
    return asyncio.get_running_loop().time() + (seconds if math.isfinite(seconds) else 1e9)
