"""The dynamic batcher without HTTP or a model: a small recording runner on a real thread pool.

The runner records every batch it is given (the padded inputs), answers `2x` (twice each input)
and `pos` (each row's index in the batch, so slicing can be checked), can be held on a
`threading.Event` so a test decides when an instance is busy, and misbehaves on marker values:
BAD -> InvalidInputError, FAIL -> ModelFailureError, CRASH -> RuntimeError, WRONG -> one output
row too few. Tests order things with events and polling on state, not with sleeps; the few
timing assertions compare against delays of a second or more.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import numpy as np
import pytest

from service.core.batching import (
    DEADLINE_SLACK,
    Batcher,
    BatchObserver,
    BatchStats,
    InstancePool,
    ModelCall,
    deadline_from,
)
from service.core.record import RequestRecord
from service.core.refill import QUICK_PAUSE_MAX, REFILL_HOLD
from service.core.serving_config import BatchingConfig
from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelFailureError,
    QueueFullError,
    ServingError,
)

SIGNATURE = "serving_default"
Arrays = dict[str, np.ndarray]
log = logging.getLogger(__name__)
GATE_TIMEOUT = 5.0  # a held runner gives up after this, so a broken test cannot hang the run
BAD, FAIL, CRASH, WRONG = -1.0, -2.0, -3.0, -4.0
AsyncTest = Callable[..., Coroutine[Any, Any, None]]

# -- test doubles and helpers ---------------------------------------------------------------


class RecordingRunner:
    """A model instance: `2x` is twice every input, `pos` the row index within the batch."""

    def __init__(self, gate: threading.Event | None = None, device: str = "/device:CPU:0"):
        self.device = device
        self.gate = gate
        self.calls: list[Arrays] = []
        self.wanted: list[tuple[str, ...]] = []  # the outputs asked of each call
        self.call_times: list[float] = []
        self._lock = threading.Lock()

    def run(self, call: ModelCall) -> Arrays:
        assert call.signature == SIGNATURE
        inputs, outputs = call.inputs, call.outputs
        with self._lock:
            self.calls.append({name: array.copy() for name, array in inputs.items()})
            self.wanted.append(outputs)
            self.call_times.append(time.monotonic())
        if self.gate is not None and not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("the test never opened the gate")
        values = np.concatenate([np.ravel(array) for array in inputs.values()])
        if BAD in values:
            raise InvalidInputError("bad input marker")
        if FAIL in values:
            raise ModelFailureError("model failure marker")
        if CRASH in values:
            raise RuntimeError("crash marker")
        first = next(iter(inputs.values()))
        rows = first.shape[0] if first.ndim else 1
        result = {f"2{name}": 2 * array for name, array in inputs.items()}
        result["pos"] = np.arange(rows)
        if WRONG in values:
            result = {name: array[:-1] for name, array in result.items()}
        return {name: array for name, array in result.items() if not outputs or name in outputs}

    def seen(self, call: int) -> list[float]:
        """The first column of input x in one call (values identify rows)."""
        return [float(v) for v in self.calls[call]["x"][:, 0]]


def req(*values: float) -> dict[str, np.ndarray]:
    """A request with one row per value: x[i] = [v, v + 0.5]."""
    return {"x": np.array([[v, v + 0.5] for v in values], dtype=np.float32)}


def doubled(request: dict[str, np.ndarray]) -> np.ndarray:
    return 2 * request["x"]


# the batchers an `in_loop` test made, for it to stop when the test ends
_made: ContextVar[list[Batcher]] = ContextVar("batchers made by the running test")


def make_batcher(
    executor: ThreadPoolExecutor,
    *runners: RecordingRunner,
    observer: BatchObserver | None = None,
    **config: Any,
) -> Batcher:
    pool = InstancePool(runners)
    batcher = Batcher("m/1", SIGNATURE, BatchingConfig(**config), pool, executor, observer)
    _made.get().append(batcher)
    return batcher


def one_instance(
    executor: ThreadPoolExecutor, gate: threading.Event | None = None, **config: Any
) -> tuple[RecordingRunner, Batcher]:
    """A batcher of one RecordingRunner (held on `gate` if given), and that runner."""
    runner = RecordingRunner(gate)
    return runner, make_batcher(executor, runner, **config)


def deadline(seconds: float = 30.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Polls (1 ms) until `predicate` holds: the ordering primitive of these tests."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Logs what asyncio reports (say, a task that died with an unread exception) without its
    traceback. The default handler formats one, which parses source with `ast`; run from a task
    finalizer that the garbage collector calls during pytest's own ast.parse, it trips CPython
    3.11.7's "AST constructor recursion depth mismatch" (python/cpython#106905) and ends the
    whole run with an INTERNALERROR."""
    log.error("asyncio: %s %r", context.get("message"), context.get("exception"))


def in_loop(timeout: float = 5.0) -> Callable[[AsyncTest], Callable[..., None]]:
    """Makes an async test a plain one (same fixtures): it runs in a fresh event loop, within
    `timeout`, and the batchers it made are stopped when it ends, however it ends."""

    def decorate(test: AsyncTest) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            async def guarded() -> None:
                asyncio.get_running_loop().set_exception_handler(quiet_exception_handler)
                made: list[Batcher] = []
                _made.set(made)  # before wait_for: its task copies this context
                try:
                    await asyncio.wait_for(test(*args, **kwargs), timeout)
                finally:
                    for batcher in made:
                        await batcher.stop()

            asyncio.run(guarded())

        return run

    return decorate


def submit(
    batcher: Batcher, request: dict[str, np.ndarray], seconds: float = 30.0
) -> asyncio.Task[Arrays]:
    """Starts a request as a task (the caller's task, which a test may cancel)."""

    async def call() -> Arrays:
        return await batcher.submit(request, deadline(seconds))

    return asyncio.create_task(call())


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(8, thread_name_prefix="test-batching")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def new_gate(executor: ThreadPoolExecutor) -> Iterator[Callable[[], threading.Event]]:
    """Gates are all opened at teardown, before the executor (set up first) is shut down."""
    gates: list[threading.Event] = []

    def new() -> threading.Event:
        gates.append(threading.Event())
        return gates[-1]

    yield new
    for gate in gates:
        gate.set()


@pytest.fixture
def gate(new_gate: Callable[[], threading.Event]) -> threading.Event:
    return new_gate()


def taken(batcher: Batcher, requests: int) -> bool:
    """All `requests` submitted so far were taken off the queue by the dispatcher."""
    return batcher.stats.requests == requests and batcher.queued == 0


async def hold_instance(batcher: Batcher, runner: RecordingRunner) -> asyncio.Task[Arrays]:
    """Occupies the (only) instance with a one-row request that blocks on the runner's gate."""
    calls = len(runner.calls)
    task = submit(batcher, req(100))
    await until(lambda: len(runner.calls) == calls + 1)
    return task


async def held_instance(
    executor: ThreadPoolExecutor, gate: threading.Event, **config: Any
) -> tuple[RecordingRunner, Batcher, asyncio.Task[Arrays]]:
    """one_instance, its instance already held by the blocking request hold_instance sends."""
    runner, batcher = one_instance(executor, gate, **config)
    return runner, batcher, await hold_instance(batcher, runner)


# -- coalescing, padding, splitting ------------------------------------------------------------


@in_loop()
async def test_requests_queued_while_busy_run_as_one_padded_batch_and_split_back(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate, allowed_batch_sizes=[1, 8, 32])
    requests = [req(10), req(20, 21, 22), req(30)]
    tasks = [submit(batcher, r) for r in requests]
    await until(lambda: batcher.queued == 3)
    assert len(runner.calls) == 1  # nothing ran while the instance was busy

    gate.set()
    results = await asyncio.gather(*tasks)
    await blocker

    assert len(runner.calls) == 2  # the three requests: one model call
    batch = runner.calls[1]["x"]
    assert batch.shape == (8, 2)  # 5 rows padded to the next allowed size
    assert runner.seen(1) == [10, 20, 21, 22, 30, 30, 30, 30]
    np.testing.assert_array_equal(batch[5:], np.repeat(batch[4:5], 3, axis=0))
    for request, result, positions in zip(requests, results, ([0], [1, 2, 3], [4]), strict=True):
        assert set(result) == {"2x", "pos"}
        np.testing.assert_array_equal(result["2x"], doubled(request))
        assert result["pos"].tolist() == positions
    stats = batcher.stats
    assert (stats.batches, stats.rows, stats.padded_rows, stats.requests) == (2, 6, 3, 4)
    assert stats.batch_sizes == {1: 1, 8: 1}
    assert stats.reasons == {"idle": 2}
    assert stats.mean_batch_size == 3.0
    assert batcher.queued == 0


@in_loop()
async def test_requests_whose_rows_differ_in_shape_run_in_separate_batches(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """A signature with an unknown inner dimension admits rows of any width: requests of
    different widths cannot be one tensor, so each width runs in its own batch, in order."""
    runner, batcher, blocker = await held_instance(executor, gate)
    wide = {"x": np.array([[1, 2, 3]], dtype=np.float32)}
    requests = [req(10), wide, req(20), req(30)]
    tasks = [submit(batcher, r) for r in requests]
    await until(lambda: batcher.queued == 4)

    gate.set()
    results = await asyncio.gather(*tasks)
    await blocker

    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["2x"], doubled(request))
    assert [call["x"].shape[1] for call in runner.calls[1:]] == [2, 3, 2]
    assert runner.seen(3) == [20, 30]


@pytest.mark.parametrize(
    ("wanted", "asked"),
    [
        ([("pos",), ("pos",)], ("pos",)),
        ([("pos",), ("2x",)], ("pos", "2x")),
        ([("pos",), ()], ()),  # one request wants every output
    ],
    ids=["same", "union", "all"],
)
@in_loop()
async def test_a_batch_asks_the_model_for_the_outputs_its_requests_want(
    executor: ThreadPoolExecutor,
    gate: threading.Event,
    wanted: list[tuple[str, ...]],
    asked: tuple[str, ...],
) -> None:
    """Converting an output costs time (millions of strings: seconds), so only the outputs
    some request of the batch names are asked for; each request gets what it named."""
    runner, batcher, blocker = await held_instance(executor, gate)
    tasks = [
        asyncio.create_task(batcher.submit(req(10 + index), deadline(), outputs))
        for index, outputs in enumerate(wanted)
    ]
    await until(lambda: batcher.queued == len(wanted))
    gate.set()
    results = await asyncio.gather(*tasks)
    await blocker
    assert len(runner.calls) == 2  # the requests ran as one batch
    assert runner.wanted[1] == asked
    for outputs, result in zip(wanted, results, strict=True):
        assert set(outputs) <= set(result), result


@in_loop()
async def test_a_request_run_alone_asks_for_its_outputs(executor: ThreadPoolExecutor) -> None:
    runner, batcher = one_instance(executor, enabled=False)
    result = await batcher.submit(req(7), deadline(), ["pos"])
    assert runner.wanted == [("pos",)]
    assert set(result) == {"pos"}


@in_loop()
async def test_idle_instance_dispatches_a_lone_request_at_once(
    executor: ThreadPoolExecutor,
) -> None:
    runner, batcher = one_instance(executor, max_batch_delay_ms=0)
    start = time.monotonic()
    result = await batcher.submit(req(7), deadline())
    assert time.monotonic() - start < 1.0  # no waiting for company
    np.testing.assert_array_equal(result["2x"], doubled(req(7)))
    assert runner.seen(0) == [7]
    assert batcher.stats.reasons == {"idle": 1}
    assert batcher.stats.batch_sizes == {1: 1}
    assert batcher.stats.padded_rows == 0


@pytest.mark.parametrize(
    ("config", "rows", "size"),
    [
        ({}, 1, 1),
        ({}, 2, 2),
        ({}, 3, 3),
        ({}, 9, 10),
        ({}, 17, 20),
        ({}, 29, 32),
        ({}, 32, 32),
        ({"max_batch_size": 12}, 9, 10),
        ({"max_batch_size": 12}, 11, 12),
        ({"max_batch_size": 10, "allowed_batch_sizes": [3, 10]}, 1, 3),
        ({"max_batch_size": 10, "allowed_batch_sizes": [3, 10]}, 3, 3),
        ({"max_batch_size": 10, "allowed_batch_sizes": [3, 10]}, 4, 10),
        ({"max_batch_size": 10, "allowed_batch_sizes": [3, 10]}, 10, 10),
    ],
)
@in_loop()
async def test_batch_is_padded_to_next_allowed_size_by_repeating_last_row(
    executor: ThreadPoolExecutor, config: dict[str, Any], rows: int, size: int
) -> None:
    runner, batcher = one_instance(executor, **config)
    request = req(*range(1, rows + 1))
    result = await batcher.submit(request, deadline())

    assert len(runner.calls) == 1
    sent = runner.calls[0]["x"]
    assert sent.shape == (size, 2)
    np.testing.assert_array_equal(sent[:rows], request["x"])
    np.testing.assert_array_equal(sent[rows:], np.repeat(request["x"][-1:], size - rows, 0))
    np.testing.assert_array_equal(result["2x"], doubled(request))  # padding not returned
    assert result["pos"].tolist() == list(range(rows))
    assert batcher.stats.rows == rows
    assert batcher.stats.padded_rows == size - rows
    assert batcher.stats.batch_sizes == {size: 1}


@in_loop()
async def test_queued_requests_never_exceed_max_batch_size(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(
        executor, gate, max_batch_size=4, allowed_batch_sizes=[1, 4]
    )
    first, second = req(1, 2, 3), req(4, 5, 6)
    tasks = [submit(batcher, first), submit(batcher, second)]
    await until(lambda: batcher.queued == 2)
    gate.set()
    results = await asyncio.gather(*tasks)
    await blocker

    assert len(runner.calls) == 3  # 3 + 3 rows: two batches, not one of 6
    assert runner.seen(1) == [1, 2, 3, 3]
    assert runner.seen(2) == [4, 5, 6, 6]
    assert all(len(call["x"]) <= 4 for call in runner.calls)
    np.testing.assert_array_equal(results[0]["2x"], doubled(first))
    np.testing.assert_array_equal(results[1]["2x"], doubled(second))
    assert batcher.stats.batch_sizes == {1: 1, 4: 2}
    assert batcher.stats.rows == 7


@pytest.mark.parametrize("instances", [1, 3])
@in_loop()
async def test_request_larger_than_max_batch_size_is_split_and_reassembled_in_order(
    executor: ThreadPoolExecutor, instances: int
) -> None:
    runners = [RecordingRunner() for _ in range(instances)]
    batcher = make_batcher(executor, *runners, max_batch_size=4, allowed_batch_sizes=[4])
    request = req(*range(10, 20))
    result = await batcher.submit(request, deadline())

    np.testing.assert_array_equal(result["2x"], doubled(request))
    assert result["pos"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    seen = sorted(runner.seen(i) for runner in runners for i in range(len(runner.calls)))
    assert seen == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 19, 19]]
    assert batcher.stats.batches == 3
    assert batcher.stats.rows == 10
    assert batcher.stats.padded_rows == 2
    assert batcher.stats.requests == 1  # one request, however many chunks


@in_loop()
async def test_failing_chunk_fails_the_split_request_with_its_own_error(
    executor: ThreadPoolExecutor,
) -> None:
    _, batcher = one_instance(executor, max_batch_size=4)
    with pytest.raises(ModelFailureError):  # the error itself, not an ExceptionGroup
        await batcher.submit(req(1, 2, 3, 4, 5, FAIL, 7, 8, 9, 10), deadline())
    after = await batcher.submit(req(11), deadline())  # instances released
    np.testing.assert_array_equal(after["2x"], doubled(req(11)))
    assert batcher.queued == 0


# -- max_batch_delay_ms ------------------------------------------------------------------------


@in_loop()
async def test_delay_holds_a_batch_open_for_a_later_request(executor: ThreadPoolExecutor) -> None:
    runner, batcher = one_instance(executor, max_batch_delay_ms=300, allowed_batch_sizes=[1, 4, 32])
    first = submit(batcher, req(1))
    await until(lambda: taken(batcher, 1))  # taken into a batch, which waits
    await asyncio.sleep(0.02)
    assert runner.calls == []
    second = submit(batcher, req(2, 3))
    results = await asyncio.gather(first, second)

    assert len(runner.calls) == 1
    assert runner.seen(0) == [1, 2, 3, 3]
    np.testing.assert_array_equal(results[0]["2x"], doubled(req(1)))
    np.testing.assert_array_equal(results[1]["2x"], doubled(req(2, 3)))
    assert batcher.stats.reasons == {"delay": 1}


@in_loop()
async def test_batch_reaching_max_size_dispatches_before_the_delay(
    executor: ThreadPoolExecutor,
) -> None:
    runner, batcher = one_instance(executor, max_batch_size=4, max_batch_delay_ms=5000)
    start = time.monotonic()
    first = submit(batcher, req(1))
    await until(lambda: taken(batcher, 1))
    second = submit(batcher, req(2, 3, 4))  # fills the batch
    await asyncio.gather(first, second)
    alone = await batcher.submit(req(5, 6, 7, 8), deadline())  # full by itself

    assert time.monotonic() - start < 2.5  # far less than the 5 s delay
    assert [runner.seen(0), runner.seen(1)] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    np.testing.assert_array_equal(alone["2x"], doubled(req(5, 6, 7, 8)))
    assert batcher.stats.reasons == {"full": 2}


# -- deadlines -------------------------------------------------------------------------------


@in_loop()
async def test_request_expiring_in_the_queue_gets_504_without_running(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate)
    late = submit(batcher, req(66), seconds=0.05)
    with pytest.raises(DeadlineExceededError):
        await late  # while the instance is still busy
    assert batcher.stats.expired == 1

    gate.set()
    await blocker
    after = await batcher.submit(req(7), deadline())
    np.testing.assert_array_equal(after["2x"], doubled(req(7)))
    assert all(66 not in runner.seen(i) for i in range(len(runner.calls)))
    assert runner.seen(1) == [7]


@in_loop()
async def test_request_already_past_its_deadline_is_rejected(executor: ThreadPoolExecutor) -> None:
    runner, batcher = one_instance(executor, max_batch_delay_ms=1000)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(req(1), deadline(-1))
    await batcher.submit(req(2), deadline(0.05))  # flushes the dispatcher
    assert [runner.seen(i) for i in range(len(runner.calls))] == [[2]]


@in_loop()
async def test_delay_is_cut_short_by_the_deadline_of_a_request_in_the_batch(
    executor: ThreadPoolExecutor,
) -> None:
    _, batcher = one_instance(executor, max_batch_delay_ms=5000)
    start = time.monotonic()
    result = await batcher.submit(req(1), deadline(0.1))  # answered, not 504

    assert time.monotonic() - start < 2.0  # not the 5 s delay
    np.testing.assert_array_equal(result["2x"], doubled(req(1)))
    assert batcher.stats.reasons == {"deadline": 1}
    assert batcher.stats.expired == 0


@in_loop()
async def test_delay_is_cut_short_by_a_request_joining_with_an_earlier_deadline(
    executor: ThreadPoolExecutor,
) -> None:
    """The module: the delay holds a batch 'never past a queued request's deadline' -- also
    the deadline of a request that joined the batch during the delay."""
    runner, batcher = one_instance(executor, max_batch_delay_ms=600)
    delay_ends = time.monotonic() + 0.6  # at the earliest: the delay starts after this
    patient = submit(batcher, req(1), seconds=30)
    await until(lambda: taken(batcher, 1))  # the batch is waiting out its delay
    hurried = submit(batcher, req(2), seconds=0.05)
    results = await asyncio.gather(patient, hurried)

    assert runner.seen(0) == [1, 2]
    np.testing.assert_array_equal(results[1]["2x"], doubled(req(2)))
    # closed for the deadline, which came first: not when the delay ran out (compared
    # with the delay, not a fixed time, so a busy machine's late wake-ups do not matter)
    early = delay_ends - runner.call_times[0]
    assert early > 0, f"dispatched {-early:.3f} s after the delay ran out"
    assert batcher.stats.reasons == {"deadline": 1}


@in_loop()
async def test_deadline_from() -> None:
    now = asyncio.get_running_loop().time()
    assert deadline_from(None, 2000) == pytest.approx(now + 2, abs=0.5)
    assert deadline_from(50, 2000) == pytest.approx(now + 0.05, abs=0.5)
    assert deadline_from(float("inf"), 2000) > now + 1e8


# -- queue bound -------------------------------------------------------------------------------


@in_loop()
async def test_full_queue_rejects_at_once(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate, max_queue_size=2)
    queued = [submit(batcher, req(1)), submit(batcher, req(2))]
    await until(lambda: batcher.queued == 2)

    assert batcher.full()
    start = time.monotonic()
    with pytest.raises(QueueFullError) as info:
        await batcher.submit(req(3), deadline())
    assert time.monotonic() - start < 1.0
    assert info.value.http_status == 429
    with pytest.raises(QueueFullError):
        batcher.check_capacity()
    assert batcher.stats.rejected == 2

    gate.set()
    results = await asyncio.gather(*queued)
    await blocker
    assert [r["2x"][0, 0] for r in results] == [2, 4]
    assert all(3 not in runner.seen(i) for i in range(len(runner.calls)))
    batcher.check_capacity()  # room again
    await batcher.submit(req(4), deadline())
    assert batcher.stats.rejected == 2


@pytest.mark.parametrize("leaves", ["cancelled", "expired"])
@in_loop()
async def test_request_that_left_the_queue_frees_its_slot(
    executor: ThreadPoolExecutor, gate: threading.Event, leaves: str
) -> None:
    """A request that is gone (caller cancelled, or deadline passed) no longer counts against
    max_queue_size, even while the instance is still busy."""
    _, batcher, blocker = await held_instance(executor, gate, max_queue_size=2)
    leaving = submit(batcher, req(1), seconds=0.05 if leaves == "expired" else 30)
    staying = submit(batcher, req(2))
    await until(lambda: batcher.queued == 2)
    if leaves == "cancelled":
        leaving.cancel()
    with pytest.raises((asyncio.CancelledError, DeadlineExceededError)):
        await leaving
    assert getattr(batcher.stats, leaves) == 1

    assert batcher.queued == 1, "a request that left still counts against max_queue_size"
    batcher.check_capacity()
    newcomer = submit(batcher, req(3))
    await until(lambda: batcher.queued == 2)
    gate.set()
    results = await asyncio.gather(blocker, staying, newcomer)
    assert [r["2x"][0, 0] for r in results] == [200, 4, 6]
    assert batcher.stats.rejected == 0


# -- failures --------------------------------------------------------------------------------


async def run_coalesced(
    batcher: Batcher, runner: RecordingRunner, gate: threading.Event, *requests: dict[str, Any]
) -> list[Any]:
    """Queues `requests` behind a held instance, releases it, and returns each request's result
    or exception (the requests ran as one batch)."""
    blocker = await hold_instance(batcher, runner)
    tasks = [submit(batcher, r) for r in requests]
    await until(lambda: batcher.queued == len(requests))
    gate.set()
    await blocker
    _, hanging = await asyncio.wait(tasks, timeout=1.0)
    for task in hanging:
        task.cancel()
    outcomes = [task.exception() or task.result() for task in tasks if task not in hanging]
    assert not hanging, f"{len(hanging)} request(s) of the batch never got an answer: {outcomes}"
    return outcomes


@pytest.mark.parametrize(
    ("marker", "error"),
    [(BAD, InvalidInputError), (FAIL, ModelFailureError), (CRASH, ModelFailureError)],
    ids=["invalid", "fail", "crash"],
)
@in_loop()
async def test_failed_batch_is_retried_in_halves_until_the_culprit_fails_alone(
    executor: ThreadPoolExecutor, gate: threading.Event, marker: float, error: type[ServingError]
) -> None:
    """One bad request among eight: 1 + 2 * log2(8) calls, only the bad one fails."""
    runner, batcher = one_instance(executor, gate)
    values = [10.0, 11.0, 12.0, 13.0, 14.0, marker, 16.0, 17.0]
    outcomes = await run_coalesced(batcher, runner, gate, *(req(v) for v in values))

    for value, outcome in zip(values, outcomes, strict=True):
        if value == marker:
            assert isinstance(outcome, error), outcome
        else:
            np.testing.assert_array_equal(outcome["2x"], doubled(req(value)))
    # depth first: the batch, its halves, the failing half's halves, ...
    groups = [values, values[:4], values[4:], values[4:6], values[4:5], values[5:6]]
    groups.append(values[6:])
    assert len(runner.calls) == 1 + len(groups)
    for call, group in enumerate(groups, start=1):
        assert runner.seen(call)[: len(group)] == group, (call, runner.seen(call))
        assert len(runner.calls[call]["x"]) in batcher.sizes  # padded as any batch
    assert batcher.stats.splits == 3
    assert batcher.stats.model_errors == {error.code: 4}
    assert batcher.stats.batches == 2  # retries are not new batches


@in_loop()
async def test_a_batch_that_fails_whole_fails_every_request_with_its_own_error(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher = one_instance(executor, gate)
    outcomes = await run_coalesced(batcher, runner, gate, req(FAIL), req(2, FAIL), req(FAIL))

    assert all(isinstance(outcome, ModelFailureError) for outcome in outcomes), outcomes
    assert len(runner.calls) == 1 + 5  # the batch, [1] | [2, 3], [2] | [3]
    assert batcher.stats.splits == 2
    # the instance was released: the model still answers
    assert (await batcher.submit(req(4), deadline()))["2x"][0, 0] == 8


@in_loop()
async def test_invalid_input_of_a_lone_request_fails_it_without_rerun(
    executor: ThreadPoolExecutor,
) -> None:
    runner, batcher = one_instance(executor)
    with pytest.raises(InvalidInputError):
        await batcher.submit(req(1, BAD), deadline())
    assert len(runner.calls) == 1
    assert batcher.stats.splits == 0
    assert batcher.stats.model_errors == {"INVALID_ARGUMENT": 1}


@in_loop()
async def test_halves_answer_every_request_when_several_fail_differently(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """A request whose retry raises a plain exception fails (500), another is invalid (400),
    and the good one is still answered, none left waiting forever."""
    runner, batcher = one_instance(executor, gate)
    outcomes = await run_coalesced(batcher, runner, gate, req(BAD), req(CRASH), req(3))

    assert isinstance(outcomes[0], InvalidInputError)
    assert isinstance(outcomes[1], ModelFailureError)
    np.testing.assert_array_equal(outcomes[2]["2x"], doubled(req(3)))


@in_loop()
async def test_halves_are_held_to_the_output_rows_check(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """A half is held to the same one-row-per-input-row check as a batch."""
    runner, batcher = one_instance(executor, gate)
    outcomes = await run_coalesced(batcher, runner, gate, req(BAD), req(2, WRONG), req(3))

    assert isinstance(outcomes[0], InvalidInputError)
    assert isinstance(outcomes[1], ModelFailureError), outcomes[1]
    np.testing.assert_array_equal(outcomes[2]["2x"], doubled(req(3)))


@in_loop()
async def test_halves_are_padded_to_allowed_sizes(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """The module: every model call is padded to an allowed size 'so every call hits a shape
    traced and warmed at load' -- the retried halves too."""
    runner, batcher = one_instance(executor, gate, allowed_batch_sizes=[1, 4, 32])
    good = req(1, 2, 3)
    outcomes = await run_coalesced(batcher, runner, gate, good, req(BAD))

    np.testing.assert_array_equal(outcomes[0]["2x"], doubled(good))
    assert isinstance(outcomes[1], InvalidInputError)
    sizes = [len(call["x"]) for call in runner.calls]
    assert sizes == [1, 4, 4, 1]  # the blocker, the batch, [good] padded, [BAD]


class SlowBatchRunner(RecordingRunner):
    """A RecordingRunner whose calls of more than one row take `seconds` first."""

    def __init__(self, gate: threading.Event, seconds: float) -> None:
        super().__init__(gate)
        self.seconds = seconds

    def run(self, call: ModelCall) -> Arrays:
        if len(call.inputs["x"]) > 1:
            time.sleep(self.seconds)
        return super().run(call)


@in_loop(timeout=15)
async def test_a_half_past_its_deadlines_gets_504_instead_of_a_retry(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """The batch of `late` (1 s deadline) and a bad request takes 2 s to fail: `late` is not
    run again, it gets 504; the bad request's half (30 s deadline) is retried."""
    runner = SlowBatchRunner(gate, seconds=2.0)
    batcher = make_batcher(executor, runner)
    blocker = await hold_instance(batcher, runner)
    late, bad = submit(batcher, req(1), seconds=1.0), submit(batcher, req(BAD))
    await until(lambda: batcher.queued == 2)
    gate.set()
    await blocker
    with pytest.raises(DeadlineExceededError, match="failed batch was retried"):
        await late
    with pytest.raises(InvalidInputError):
        await bad

    assert [runner.seen(call) for call in (1, 2)] == [[1, BAD], [BAD]]
    assert len(runner.calls) == 3
    assert (batcher.stats.splits, batcher.stats.expired) == (1, 1)


# -- cancellation ----------------------------------------------------------------------------


@in_loop()
async def test_cancelled_queued_request_leaves_the_queue(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate)
    gone, kept = submit(batcher, req(1)), submit(batcher, req(2, 3))
    await until(lambda: batcher.queued == 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.stats.cancelled == 1

    gate.set()
    result = await kept
    await blocker
    np.testing.assert_array_equal(result["2x"], doubled(req(2, 3)))
    assert result["pos"].tolist() == [0, 1]
    assert len(runner.calls) == 2
    assert runner.seen(1) == [2, 3]
    assert batcher.stats.rows == 3


@in_loop()
async def test_cancelling_a_split_request_removes_all_its_chunks(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate, max_batch_size=4)
    split = submit(batcher, req(*range(1, 11)))
    # one request against max_queue_size, however many chunks; all its rows count
    await until(lambda: (batcher.queued, batcher.queued_rows) == (1, 10))
    split.cancel()
    with pytest.raises(asyncio.CancelledError):
        await split
    assert batcher.stats.cancelled in (1, 3)  # counted per request or per chunk
    assert (batcher.queued, batcher.queued_rows) == (0, 0)

    gate.set()
    await blocker
    await batcher.submit(req(42), deadline())
    assert [runner.seen(i) for i in range(len(runner.calls))] == [[100], [42]]


@in_loop()
async def test_cancelling_a_running_request_leaves_the_rest_of_its_batch_alone(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher = one_instance(executor, gate)
    left, stayed = submit(batcher, req(1)), submit(batcher, req(2))
    await until(lambda: len(runner.calls) == 1)
    assert runner.seen(0) == [1, 2]  # both in the running batch
    left.cancel()
    with pytest.raises(asyncio.CancelledError):
        await left
    assert batcher.stats.cancelled == 0  # it had started: not counted as left the queue

    gate.set()
    result = await stayed
    np.testing.assert_array_equal(result["2x"], doubled(req(2)))
    assert result["pos"].tolist() == [1]
    after = await batcher.submit(req(5), deadline())  # the instance was released
    np.testing.assert_array_equal(after["2x"], doubled(req(5)))


# -- batching disabled, unbatchable inputs -------------------------------------------------------


@in_loop()
async def test_disabled_batching_runs_each_request_alone_with_the_queue_bound(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher = one_instance(executor, gate, enabled=False, max_queue_size=2)
    requests = [req(1, 2, 3), req(4), req(5, 6)]
    first = submit(batcher, requests[0])
    await until(lambda: len(runner.calls) == 1)
    waiting = [submit(batcher, r) for r in requests[1:]]
    await until(lambda: batcher.queued == 2)
    with pytest.raises(QueueFullError):
        await batcher.submit(req(7), deadline())
    assert batcher.stats.rejected == 1

    gate.set()
    results = await asyncio.gather(first, *waiting)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["2x"], doubled(request))
        assert result["pos"].tolist() == list(range(len(request["x"])))
    seen = sorted(runner.seen(i) for i in range(len(runner.calls)))
    assert seen == [[1, 2, 3], [4], [5, 6]]  # one call each, unpadded
    assert batcher.stats.padded_rows == 0
    assert batcher.stats.batches == 3
    assert batcher.queued == 0


@in_loop()
async def test_disabled_batching_counts_requests_and_rows(executor: ThreadPoolExecutor) -> None:
    """BatchStats (shown in model status) counts requests and real rows with batching off too."""
    _, batcher = one_instance(executor, enabled=False)
    await batcher.submit(req(1, 2, 3), deadline())
    await batcher.submit(req(4), deadline())
    stats = batcher.stats
    assert (stats.batches, stats.requests, stats.rows) == (2, 2, 4)
    assert stats.batch_sizes == {3: 1, 1: 1}


@in_loop()
async def test_disabled_batching_request_past_deadline_waiting_for_instance_gets_504(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runner, batcher = one_instance(executor, gate, enabled=False)
    first = submit(batcher, req(1))
    await until(lambda: len(runner.calls) == 1)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(req(2), deadline(0.05))
    assert batcher.stats.expired == 1
    assert batcher.queued == 0
    gate.set()
    await first
    assert len(runner.calls) == 1


@pytest.mark.parametrize(
    "inputs",
    [
        {"a": np.arange(2.0), "b": np.arange(3.0)},  # rows differ
        {"a": np.arange(3.0), "b": np.float64(5.0)},  # a scalar: no batch dimension
    ],
    ids=["different-rows", "scalar"],
)
@in_loop()
async def test_inputs_without_common_batch_dimension_run_alone_unpadded(
    executor: ThreadPoolExecutor, gate: threading.Event, inputs: dict[str, np.ndarray]
) -> None:
    runner, batcher, blocker = await held_instance(executor, gate)
    odd = asyncio.create_task(batcher.submit(inputs, deadline()))
    normal = submit(batcher, req(3))  # 3 rows: would be padded to 4 if coalesced
    await until(lambda: batcher.queued == 2)
    gate.set()
    result, _, _ = await asyncio.gather(odd, normal, blocker)

    odd_calls = [call for call in runner.calls if "a" in call]
    assert len(odd_calls) == 1
    assert set(odd_calls[0]) == {"a", "b"}
    for name, array in inputs.items():
        np.testing.assert_array_equal(odd_calls[0][name], array)  # unpadded, as sent
        np.testing.assert_array_equal(result[f"2{name}"], 2 * array)
    assert sum(1 for call in runner.calls if "x" in call) == 2  # never mixed in a batch
    assert batcher.stats.padded_rows == 0


# -- several instances -----------------------------------------------------------------------


@in_loop()
async def test_concurrent_batches_go_to_different_idle_instances(
    executor: ThreadPoolExecutor, gate: threading.Event
) -> None:
    runners = [RecordingRunner(gate, device=f"/device:GPU:{i}") for i in range(3)]
    batcher = make_batcher(executor, *runners, max_batch_size=2)
    requests = [req(1, 2), req(3, 4), req(5, 6)]
    tasks = [submit(batcher, r) for r in requests]
    await until(lambda: all(len(runner.calls) == 1 for runner in runners))
    assert batcher.pool.busy == [1, 1, 1]  # three batches at once, one per instance

    gate.set()
    results = await asyncio.gather(*tasks)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["2x"], doubled(request))
    assert batcher.pool.batches_run == [1, 1, 1]
    assert sorted(runner.seen(0) for runner in runners) == [[1, 2], [3, 4], [5, 6]]

    for value in (7, 8, 9):  # one at a time: the least loaded free instance each time
        await batcher.submit(req(value), deadline())
    assert batcher.pool.batches_run == [2, 2, 2]
    assert [len(runner.calls) for runner in runners] == [2, 2, 2]
    assert batcher.pool.busy == [0, 0, 0]


@in_loop()
async def test_queued_batch_goes_to_the_instance_that_frees_up(
    executor: ThreadPoolExecutor, new_gate: Callable[[], threading.Event]
) -> None:
    slow, fast = RecordingRunner(new_gate()), RecordingRunner(new_gate())
    batcher = make_batcher(executor, slow, fast, max_batch_size=1)
    first, second = submit(batcher, req(1)), submit(batcher, req(2))
    await until(lambda: len(slow.calls) == 1 and len(fast.calls) == 1)
    third = submit(batcher, req(3))
    await until(lambda: batcher.queued == 1)

    assert fast.gate is not None and slow.gate is not None
    fast.gate.set()
    await second
    assert (await third)["2x"][0, 0] == 6
    assert [fast.seen(0), fast.seen(1)] == [[2], [3]]
    assert len(slow.calls) == 1 and not first.done()

    slow.gate.set()
    assert (await first)["2x"][0, 0] == 2
    assert batcher.pool.batches_run == [1, 2]


def test_stats_defaults() -> None:
    stats = BatchStats()
    assert stats.mean_batch_size == 0.0
    assert (stats.batches, stats.requests, stats.rejected, stats.splits) == (0, 0, 0, 0)
    assert not stats.model_errors


class SlowRunner(RecordingRunner):
    """A RecordingRunner whose every call takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def run(self, call: ModelCall) -> Arrays:
        result = super().run(call)  # notes the call's start
        time.sleep(self.seconds)
        return result


class DispatchClock:
    """A BatchObserver noting when each batch left the queue (event-loop time)."""

    def __init__(self) -> None:
        self.dispatched_at: list[float] = []

    def dispatched(self, queue_waits: Sequence[float]) -> None:
        self.dispatched_at.append(asyncio.get_running_loop().time())

    def ran(self, seconds: float) -> None:
        pass


@in_loop()
async def test_a_held_batch_closes_in_time_for_the_call_to_end_by_the_deadline(
    executor: ThreadPoolExecutor,
) -> None:
    """A batch held open for company closes DEADLINE_SLACK (1.5) calls, as the batcher
    measured them, before the earliest deadline in it: the call has more than its usual time,
    so the answer arrives by the deadline, which a gRPC client enforces, instead of just after
    it. The closing is compared with a timer the test sets for the same moment, not with a
    fixed time: on a busy machine both run late alike."""
    loop = asyncio.get_running_loop()
    runner, clock = SlowRunner(0.1), DispatchClock()
    batcher = make_batcher(
        executor, runner, observer=clock, max_batch_delay_ms=5000, max_batch_size=2
    )
    began = time.monotonic()
    await batcher.submit(req(1, 2), deadline())  # a full batch: measures one call
    call = batcher.call_seconds
    assert runner.seconds <= call <= time.monotonic() - began  # the call, not the request

    due = loop.time() + 5 * call
    close_by = due - DEADLINE_SLACK * call
    woke: list[float] = []
    loop.call_at(close_by, lambda: woke.append(loop.time()))
    await batcher.submit(req(3), due)
    closed = clock.dispatched_at[1]
    assert closed > close_by - 0.001, f"closed {(close_by - closed) / call:.2f} calls early"
    late = (closed - woke[0]) / call
    assert late < 0.5, f"closed {late:.2f} calls late ({DEADLINE_SLACK} before the deadline)"
    assert batcher.stats.reasons == {"full": 1, "deadline": 1}


# -- refill: holding a small batch for the clients just answered ---------------------------


async def closed_loop_client(
    batcher: Batcher, first: float, then: float, pause: float | None = None
) -> Arrays:
    """A client that sends its next request `RETURN_SECONDS` after its answer (its round trip),
    which says the client paused `pause` of it (None: not known)."""
    await batcher.submit(req(first), deadline())
    await asyncio.sleep(RETURN_SECONDS)
    return await batcher.submit(req(then), deadline(), record=RequestRecord("", client_pause=pause))


RETURN_SECONDS = 0.02  # a client's round trip, well within half of SlowRunner(0.4)'s call


@pytest.mark.parametrize("refill", [True, False])
@in_loop()
async def test_refill_holds_a_small_batch_until_the_answered_clients_are_back(
    executor: ThreadPoolExecutor, refill: bool
) -> None:
    """A's request runs alone while B's and C's queue; when A is answered, B and C would go
    on their own while A is on its way back. With refill they wait (at most half a call)
    for A's next request and the three run as one call; without, B and C go at once."""
    runner = SlowRunner(0.4)
    batcher = make_batcher(executor, runner, refill=refill, max_batch_size=8)
    a = asyncio.create_task(closed_loop_client(batcher, 1, 11))
    await until(lambda: len(runner.calls) == 1)  # A's first request is running
    b, c = submit(batcher, req(2)), submit(batcher, req(3))
    answers = await asyncio.gather(a, b, c)

    if refill:
        assert [runner.seen(0), runner.seen(1)] == [[1], [2, 3, 11]]
        assert batcher.stats.reasons == {"idle": 1, "refill": 1}
    else:
        assert [runner.seen(0), runner.seen(1), runner.seen(2)] == [[1], [2, 3], [11]]
        assert batcher.stats.reasons == {"idle": 3}
    for answer, value in zip(answers, (11, 2, 3), strict=True):
        np.testing.assert_array_equal(answer["2x"], doubled(req(value)))


@pytest.mark.parametrize(
    ("pause", "held"),
    [
        (0.001, True),  # back at once: held for
        (0.5, False),  # back after the hold could last
        (QUICK_PAUSE_MAX * 2, False),  # within this hold, but longer than a quick client's
    ],
)
@in_loop()
async def test_refill_holds_only_while_most_clients_come_back_at_once(
    executor: ThreadPoolExecutor, pause: float, held: bool
) -> None:
    """24 requests say their clients paused `pause` after their previous answers; then the
    scenario above. Once most clients are known to pause longer than a quick client, B and C
    go without waiting for A, whose next request would come after the hold."""
    runner = SlowRunner(0.4)
    batcher = make_batcher(executor, runner, refill=True, max_batch_size=32)
    record = RequestRecord("", client_pause=pause)
    await asyncio.gather(*(batcher.submit(req(v), deadline(), record=record) for v in range(24)))
    await asyncio.sleep(batcher.call_seconds * 1.2)  # that answer is no longer recent
    a = asyncio.create_task(closed_loop_client(batcher, 101, 111, pause))
    await until(lambda: len(runner.calls) == 2)  # A's first request is running
    b, c = submit(batcher, req(102)), submit(batcher, req(103))
    await asyncio.gather(a, b, c)

    if held:
        assert [runner.seen(1), runner.seen(2)] == [[101], [102, 103, 111]]
        assert batcher.stats.reasons == {"idle": 2, "refill": 1}
    else:
        assert [runner.seen(1), runner.seen(2), runner.seen(3)] == [[101], [102, 103], [111]]
        assert batcher.stats.reasons == {"idle": 4}


@in_loop()
async def test_refill_never_holds_a_lone_client(executor: ThreadPoolExecutor) -> None:
    """One client, request after request: each answered row is back by the time its next
    request is dispatched, so nothing is expected and nothing waits."""
    runner = SlowRunner(0.05)
    batcher = make_batcher(executor, runner, refill=True)
    for value in range(4):
        await batcher.submit(req(value), deadline())
    assert batcher.stats.reasons == {"idle": 4}


@pytest.mark.parametrize("hold", [REFILL_HOLD, 1.0])
@in_loop()
async def test_refill_hold_ends_after_refill_hold_calls_when_no_one_comes_back(
    executor: ThreadPoolExecutor, hold: float
) -> None:
    """Two rows answered, their clients gone: a newcomer is held for them at most
    `refill_hold` (by default half) of the call the batcher measured, then runs alone. The
    closing is compared with a timer set for the same moment, so a busy machine delays both
    alike."""
    loop = asyncio.get_running_loop()
    runner, clock = SlowRunner(0.4), DispatchClock()
    batcher = make_batcher(executor, runner, observer=clock, refill=True, refill_hold=hold)
    await batcher.submit(req(1, 2), deadline())  # answered: two rows may come back
    call = batcher.call_seconds
    held_until = loop.time() + hold * call
    woke: list[float] = []
    loop.call_at(held_until, lambda: woke.append(loop.time()))
    await batcher.submit(req(3), deadline())

    assert [runner.seen(0), runner.seen(1)] == [[1, 2], [3]]
    assert batcher.stats.reasons == {"idle": 1, "refill": 1}
    closed = clock.dispatched_at[1]
    assert closed > held_until - 0.002, f"closed {(held_until - closed) / call:.2f} calls early"
    assert (closed - woke[0]) / call < 0.25, "held a quarter call past refill_hold"


def test_default_allowed_sizes_pad_by_less_than_a_quarter() -> None:
    """1, 2, 3, then four sizes per doubling: any batch is padded by less than a quarter of its
    rows, with a number of sizes (each warmed at load) logarithmic in max_batch_size."""
    for limit in (1, 7, 32, 100, 128, 4096):
        sizes = BatchingConfig(max_batch_size=limit).batch_sizes()
        assert sizes[-1] == limit and list(sizes) == sorted(set(sizes))
        for rows in range(1, limit + 1):
            padded = sizes[bisect.bisect_left(sizes, rows)]
            assert padded - rows < rows / 4 + 1e-9 or padded - rows == 0, (limit, rows, padded)
    assert BatchingConfig(max_batch_size=32).batch_sizes() == (
        (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32)
    )
    assert len(BatchingConfig(max_batch_size=4096).batch_sizes()) == 44
