"""Overload of a real `modelserve serve` process: requests arrive at 4x what a deliberately slow
model can answer. Those beyond the queue bound get 429 at once, admitted ones keep a bounded
p99, nothing else is answered (no 5xx, no hang), and the server is back to normal as soon as
the load stops. Run with `-s` to see the figures."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.server import free_port
from tests.test_cli_serve import serve_process, wait_ready
from tests.test_metrics import export_sleepy

CALL_SECONDS = 0.1  # each model call sleeps this long, whatever its batch size
MAX_BATCH = 4
MAX_QUEUE = 8
CAPACITY = MAX_BATCH / CALL_SECONDS  # requests per second, with one instance
OVERLOAD = 4  # times the capacity
SECONDS = 5.0
# The longest an admitted request can take: the queue ahead of it (MAX_QUEUE / MAX_BATCH
# batches), a batch running, then its own call. Without the bound, at 4x the capacity, the
# last request of the run would wait (OVERLOAD - 1) * SECONDS = 15 s.
WORST_ADMITTED_SECONDS = (MAX_QUEUE / MAX_BATCH + 2) * CALL_SECONDS


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    retry_after: str | None


async def offered_load(url: str, rate: float, seconds: float) -> list[Answer]:
    """Open loop: one request every 1/rate s for `seconds`, whether or not earlier ones were
    answered (closed-loop clients would slow down with the server and hide the overload)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(x: float) -> Answer:
            started = time.perf_counter()
            response = await client.post("/v1/models/sleepy:predict", json={"instances": [x]})
            if response.status_code == 200:  # admitted: the right answer, not just a 200
                assert response.json() == {"predictions": [2.0 * x]}, response.text
            return Answer(
                response.status_code,
                time.perf_counter() - started,
                response.headers.get("retry-after"),
            )

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(float(i))))
        return list(await asyncio.gather(*tasks))


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
        answers = asyncio.run(offered_load(url, OVERLOAD * CAPACITY, SECONDS))

        admitted = np.array([a.seconds for a in answers if a.status == 200])
        shed = [a for a in answers if a.status == 429]
        shed_seconds = np.array([a.seconds for a in shed])
        statuses = {a.status for a in answers}
        shed_rate = len(shed) / len(answers)
        print(
            f"\noverload {OVERLOAD}x ({OVERLOAD * CAPACITY:.0f} req/s offered for {SECONDS} s, "
            f"capacity {CAPACITY:.0f} req/s): {len(answers)} requests, {len(admitted)} "
            f"answered 200, {len(shed)} shed with 429 ({shed_rate:.1%}); "
            f"admitted p50 {np.percentile(admitted, 50) * 1000:.0f} ms, "
            f"p99 {np.percentile(admitted, 99) * 1000:.0f} ms "
            f"(the queue's worst case {WORST_ADMITTED_SECONDS * 1000:.0f} ms, asserted under "
            f"{2 * WORST_ADMITTED_SECONDS * 1000:.0f} ms); "
            f"429 p50 {np.percentile(shed_seconds, 50) * 1000:.1f} ms, "
            f"p99 {np.percentile(shed_seconds, 99) * 1000:.1f} ms"
        )
        assert statuses <= {200, 429}, statuses  # no 5xx, no 504: nothing waited too long
        assert all(a.retry_after == "1" for a in shed)
        # the excess is shed (at 4x, about 3/4 of it) while the model is kept busy
        assert 0.5 < shed_rate < 0.9
        assert len(admitted) >= 0.6 * CAPACITY * SECONDS
        # admitted requests wait for a bounded queue, never for the whole backlog
        assert np.percentile(admitted, 99) < 2 * WORST_ADMITTED_SECONDS
        # shedding costs no model time: faster than any admitted answer could be
        assert np.percentile(shed_seconds, 99) < CALL_SECONDS

        # recovery: the next request after the load is answered at the model's own pace
        started = time.perf_counter()
        after = httpx.post(f"{url}/v1/models/sleepy:predict", json={"instances": [1.0]})
        assert after.status_code == 200
        assert time.perf_counter() - started < 3 * CALL_SECONDS
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert process.poll() is None  # still serving
