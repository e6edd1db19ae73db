"""Overload of a real `modelserve serve` process: requests arrive at 4x what a deliberately slow
model can answer. Those beyond the queue bound get 429 at once, admitted ones keep a bounded
p99, nothing else is answered (no 5xx, no hang), and the server is back to normal as soon as
the load stops. Run with `-s` to see the figures.

Every time bound is in quantities measured in the same run, so the test holds on a busy machine
(where a sleep lasts longer and every request queues for a CPU): the model's call time as the
server timed it, and what a request without model time takes at the same moments (a model
status GET sent alongside the predicts through the same client)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.server import free_port
from tests.test_cli_serve import serve_process, wait_ready
from tests.test_metrics import Scrape, change, export_sleepy, scrape

# Each model call sleeps this long (at least), whatever its batch size: long against what a
# request costs in CPU, so that on a busy machine the model, not the CPU, sets the pace
CALL_SECONDS = 0.2
MAX_BATCH = 4
MAX_QUEUE = 8
NOMINAL_CAPACITY = MAX_BATCH / CALL_SECONDS  # requests per second, one instance, at best
OVERLOAD = 4  # times the nominal capacity
SECONDS = 8.0
PROBE_EVERY = 4  # one model-free request alongside every 4th predict
# The longest an admitted request waits, in model calls: the queue ahead of it (MAX_QUEUE /
# MAX_BATCH full batches) and the batch running when it came; then its own call. Without the
# bound, at 4x the capacity, the last request of the run would wait (OVERLOAD - 1) * SECONDS.
QUEUE_CALLS = MAX_QUEUE / MAX_BATCH + 1
ADMITTED_CALLS = QUEUE_CALLS + 1
SLACK = 1.5  # for single calls longer than their mean, and gaps between them on a busy CPU
LONE_REQUESTS = 5
MODEL = {"model": "sleepy", "version": "1"}


@dataclass(frozen=True)
class Answer:
    status: int
    started: float  # time.perf_counter()
    seconds: float
    retry_after: str | None


async def offered_load(url: str, rate: float, seconds: float) -> tuple[list[Answer], list[Answer]]:
    """Open loop: one predict every 1/rate s for `seconds`, whether or not earlier ones were
    answered (closed-loop clients would slow down with the server and hide the overload), and
    with every PROBE_EVERY-th a model status GET: (predicts, probes)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def timed(request: httpx.Request) -> tuple[httpx.Response, float, float]:
            started = time.perf_counter()
            response = await client.send(request)
            return response, started, time.perf_counter() - started

        async def predict(x: float) -> Answer:
            request = client.build_request(
                "POST", "/v1/models/sleepy:predict", json={"instances": [x]}
            )
            response, started, took = await timed(request)
            if response.status_code == 200:  # admitted: the right answer, not just a 200
                assert response.json() == {"predictions": [2.0 * x]}, response.text
            return Answer(response.status_code, started, took, response.headers.get("retry-after"))

        async def probe() -> Answer:
            response, started, took = await timed(client.build_request("GET", "/v1/models/sleepy"))
            assert response.status_code == 200, response.text
            return Answer(response.status_code, started, took, None)

        predicts: list[asyncio.Task[Answer]] = []
        probes: list[asyncio.Task[Answer]] = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            predicts.append(asyncio.create_task(predict(float(i))))
            if i % PROBE_EVERY == 0:
                probes.append(asyncio.create_task(probe()))
        return list(await asyncio.gather(*predicts)), list(await asyncio.gather(*probes))


def lone_seconds(url: str) -> float:
    """One predict with nothing else going on (a new connection, as after the load)."""
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/models/sleepy:predict", json={"instances": [1.0]})
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentiles(seconds: list[float], *q: float) -> list[float]:
    """Percentiles `q` of `seconds`; infinite if there are none (nothing was shed)."""
    return list(np.percentile(seconds, q)) if seconds else [math.inf] * len(q)


def share_within(before: Scrape, after: Scrape, name: str, seconds: float) -> tuple[float, float]:
    """(edge, share): the first bucket bound of histogram `name` (model sleepy) >= `seconds`,
    and the share of the observations between two scrapes that fell within it."""
    bounds = sorted(
        float(dict(labels)["le"])
        for labels in after.series(f"{name}_bucket")
        if dict(labels)["model"] == "sleepy"
    )
    edge = next(b for b in bounds if b >= seconds)
    le = "+Inf" if math.isinf(edge) else str(edge)
    total = change(before, after, f"{name}_count", **MODEL)
    return edge, change(before, after, f"{name}_bucket", **MODEL, le=le) / total


def test_at_4x_capacity_the_excess_gets_429_fast_and_admitted_requests_a_bounded_p99(
    tmp_path: Path,
) -> None:
    export_sleepy(tmp_path / "models", "sleepy", seconds=CALL_SECONDS)
    config = tmp_path / "serving.yaml"
    config.write_text(
        "models:\n  - name: sleepy\n"
        f"    batching: {{max_batch_size: {MAX_BATCH}, max_queue_size: {MAX_QUEUE}}}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"MODELSERVE_MODEL_BASE_PATH": str(tmp_path / "models"), "MODELSERVE_LOG_LEVEL": "error"}
    args = ("--host", "127.0.0.1", "--port", str(port), "--config", str(config))
    with serve_process(*args, env=env) as process:
        wait_ready(url, process)
        lone_before = max(lone_seconds(url) for _ in range(LONE_REQUESTS))
        before = scrape(url)
        predicts, probes = asyncio.run(offered_load(url, OVERLOAD * NOMINAL_CAPACITY, SECONDS))
        after = scrape(url)
        lone_after = lone_seconds(url)  # the first request once the load has stopped

        # the baselines: the model's call as the server timed it during the load (a sleep of
        # CALL_SECONDS, longer on a busy machine), the capacity that makes, and what a request
        # without model time took through the same client and server meanwhile
        batches = change(before, after, "modelserve_batch_duration_seconds_count", **MODEL)
        call = change(before, after, "modelserve_batch_duration_seconds_sum", **MODEL) / batches
        capacity = MAX_BATCH / call
        starts = [a.started for a in predicts]
        window = max(starts) - min(starts)  # over which the client managed to offer the load
        offered = len(predicts) / window
        served = capacity * window  # what the model could answer meanwhile, at most
        free_p50, free_p99 = percentiles([a.seconds for a in probes], 50, 99)

        admitted = [a.seconds for a in predicts if a.status == 200]
        shed = [a for a in predicts if a.status == 429]
        admitted_p50, admitted_p99 = percentiles(admitted, 50, 99)
        shed_p50, shed_p99 = percentiles([a.seconds for a in shed], 50, 99)
        # what an admitted request may take: the worst its queue allows, and on a busy machine
        # twice what a model-free request took, as its request and its answer each wait their
        # turn for a CPU (a model-free request's two are moments apart, so both or none)
        admitted_bound = SLACK * ADMITTED_CALLS * call + 2 * free_p99
        edge, waits_within = share_within(
            before, after, "modelserve_queue_wait_seconds", SLACK * QUEUE_CALLS * call
        )
        print(
            f"\noverload: {len(predicts)} requests at {offered:.0f}/s for {window:.1f} s, "
            f"{offered / capacity:.1f}x the capacity measured ({capacity:.0f}/s: a call of "
            f"{MAX_BATCH} took {ms(call)}); {len(admitted)} answered 200 (the model could "
            f"{served:.0f} meanwhile), {len(shed)} shed with 429 ({len(shed) / len(predicts):.1%})"
            f"\nadmitted p50 {ms(admitted_p50)}, p99 {ms(admitted_p99)} (bound "
            f"{ms(admitted_bound)}: {SLACK} x {ADMITTED_CALLS:.0f} calls + 2 x model-free p99); "
            f"queue waits within {ms(edge)} (>= {SLACK} x {QUEUE_CALLS:.0f} calls): "
            f"{waits_within:.1%}\n429 p50 {ms(shed_p50)}, p99 {ms(shed_p99)}; model-free p50 "
            f"{ms(free_p50)}, p99 {ms(free_p99)}\n"
            f"lone request before the load {ms(lone_before)} (slowest of {LONE_REQUESTS}), "
            f"after {ms(lone_after)}"
        )
        statuses = {a.status for a in predicts}
        assert statuses <= {200, 429}, statuses  # no 5xx, no 504: nothing waited too long
        assert all(a.retry_after == "1" for a in shed)
        assert offered > 1.5 * capacity, "the client could not offer an overload"
        # admitted requests wait for a bounded queue, never for the whole backlog: as the
        # server timed their waits, and end to end (plus what any request took meanwhile)
        assert waits_within >= 0.99, f"{waits_within:.1%} of queue waits within {edge} s"
        assert admitted_p99 < admitted_bound
        # the model is kept busy (full batches back to back) and what it cannot answer in the
        # time is shed, but for what the bounded queue and the running batch hold at the end
        count = len(admitted)
        assert 0.75 * served <= count <= 1.25 * served + MAX_QUEUE + MAX_BATCH, count
        # shedding costs no model time: a 429 takes what a model-free request took meanwhile
        # (the median: tails of short requests on a busy machine are the CPU's)
        assert shed_p50 < free_p50 + call / 2

        # recovery: at once, at the model's own pace (it waited behind nothing)
        assert lone_after < lone_before + call
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert process.poll() is None  # still serving
