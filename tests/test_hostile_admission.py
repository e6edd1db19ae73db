"""One request must not starve the rest (issue 21, finding 1): admission counts rows, not
requests. Through a real server, with a deliberately slow model (each call sleeps CALL_SECONDS
whatever its batch size):

- a small client keeps getting 200s, each within a few model calls, while a request of many
  batches is in the system (its chunks take turns with other requests, and it counts as one
  request against max_queue_size);
- a request whose last chunk could not start before its deadline, by the call time the server
  measured, gets 504 at once and the model never runs for it;
- a request is admitted or refused whole: one larger than any request may be gets 400 saying
  the limit, one that does not fit the queue's rows now gets 429 with Retry-After, and in
  neither case does any of its rows run; small requests still find room meanwhile.

Time bounds are ratios of durations measured in the same test (the model's call time as the
server timed it, the huge request's own duration), never fixed milliseconds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.saved_models import write_config
from tests.server import error_message, running_server, wait_for
from tests.test_gateway_batching import answer_of, batch_stats
from tests.test_metrics import change, export_sleepy, scrape

CALL_SECONDS = 0.1  # each model call sleeps this long (at least)
BATCH = 10
FAIR, LATE, WHOLE = "fair", "late", "whole"
# WHOLE: a queue of WHOLE_QUEUE_ROWS rows, so one request may have at most half of it
WHOLE_BATCH = 5
WHOLE_QUEUE_ROWS = 100
WHOLE_LIMIT = WHOLE_QUEUE_ROWS // 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """- fair: max_batch_size 10, max_queue_size 4 (fewer than the chunks of a huge request),
      max_queue_rows 1000;
    - late: max_batch_size 10, default queue bounds;
    - whole: max_batch_size 5, max_queue_rows 100."""
    root = tmp_path_factory.mktemp("admission")
    repo = root / "repo"
    export_sleepy(repo, FAIR, seconds=CALL_SECONDS)
    for name in (LATE, WHOLE):
        shutil.copytree(repo / FAIR, repo / name)
    config = write_config(
        root / "serving.yaml",
        [
            {
                "name": FAIR,
                "batching": {"max_batch_size": BATCH, "max_queue_size": 4, "max_queue_rows": 1000},
            },
            {"name": LATE, "batching": {"max_batch_size": BATCH}},
            {
                "name": WHOLE,
                "batching": {"max_batch_size": WHOLE_BATCH, "max_queue_rows": WHOLE_QUEUE_ROWS},
            },
        ],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=120) as url:
        yield url


@dataclass(frozen=True)
class Timed:
    response: httpx.Response
    started: float  # time.perf_counter()
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def predict(url: str, model: str, xs: list[float], headers: dict[str, str] | None = None) -> Timed:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/models/{model}:predict", json={"instances": xs}, headers=headers, timeout=120
    )
    return Timed(response, started, time.perf_counter())


def xs(count: int, start: float = 0.0) -> list[float]:
    return [start + i for i in range(count)]


def doubled(values: list[float]) -> list[float]:
    return [2.0 * x for x in values]


def call_seconds(url: str, model: str) -> float:
    """The mean model call of `model` so far, as the server timed it."""
    metrics = scrape(url)
    labels = {"model": model, "version": "1"}
    total = metrics.value("modelserve_batch_duration_seconds_sum", **labels)
    return total / metrics.value("modelserve_batch_duration_seconds_count", **labels)


def start_and_wait_for_its_first_batch(
    pool: ThreadPoolExecutor, url: str, model: str, values: list[float]
) -> Future[Timed]:
    """Sends a request in the background; returns once one of its batches is running."""
    batches = batch_stats(url, model)["batches"]
    sent = pool.submit(predict, url, model, values)
    wait_for(
        lambda: sent.done() or batch_stats(url, model)["batches"] > batches,
        timeout=60,
        what=f"the first batch of the {len(values)}-row request",
        interval=0.01,
    )
    assert not sent.done(), "the request ended before the test could go on: too fast a model?"
    return sent


def unchanged(before: dict[str, Any], after: dict[str, Any], *keys: str) -> None:
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}, (before, after)


def test_a_small_client_keeps_getting_200s_while_a_huge_request_is_in_the_system(
    server: str,
) -> None:
    """30 batches of one request (30x max_batch_size rows, more chunks than max_queue_size):
    a client sending one row at a time meanwhile is admitted every time, and each of its
    answers takes a few model calls, not the rest of the huge request."""
    huge = xs(30 * BATCH)
    with ThreadPoolExecutor(1) as pool:
        big = start_and_wait_for_its_first_batch(pool, server, FAIR, huge)
        small: list[Timed] = []
        while not big.done():
            small.append(predict(server, FAIR, [7.0]))
        answered = big.result()
    assert answer_of(answered.response) == doubled(huge)

    for one in small:
        assert answer_of(one.response) == [14.0]
    during = [one for one in small if one.ended < answered.ended]
    call = call_seconds(server, FAIR)
    slowest = max(one.seconds for one in small)
    print(
        f"\nhuge request: {answered.seconds:.2f} s ({answered.seconds / call:.0f} calls of "
        f"{call * 1000:.0f} ms); small client: {len(during)} answers meanwhile, slowest "
        f"{slowest * 1000:.0f} ms"
    )
    # turns: one small batch between two chunks, so the small client is answered about every
    # other call (15 times over the 30 chunks), not once the huge request is done
    assert len(during) >= 5, f"{len(during)} small answers while the huge request ran"
    assert slowest < answered.seconds / 5


def test_a_request_that_cannot_start_before_its_deadline_is_refused_without_running(
    server: str,
) -> None:
    """Once a call has been timed, a request of 50 batches with a deadline of 10 calls gets 504
    at once: the model never runs for it (today it would run ~10 batches, then get 504)."""
    answer_of(predict(server, LATE, [1.0]).response)  # the server times one call
    call = call_seconds(server, LATE)
    before, metrics_before = batch_stats(server, LATE), scrape(server)

    timeout_ms = 10 * call * 1000
    late = predict(server, LATE, xs(50 * BATCH), headers={"X-Request-Timeout": f"{timeout_ms}"})
    message = error_message(late.response, 504)
    assert "deadline" in message and "refused without running" in message, message
    assert late.seconds < timeout_ms / 1000 / 2, "refused only after waiting for its deadline"

    after, metrics_after = batch_stats(server, LATE), scrape(server)
    unchanged(before, after, "batches", "rows", "requests")
    assert after["expired"] == before["expired"] + 1, after
    rejected = change(
        metrics_before, metrics_after, "modelserve_requests_rejected_total", model=LATE,
        reason="deadline",
    )  # fmt: skip
    assert rejected == 1
    # what can start in time is admitted: 2 batches with the default deadline
    assert answer_of(predict(server, LATE, xs(2 * BATCH)).response) == doubled(xs(2 * BATCH))


def test_a_request_larger_than_any_request_may_be_gets_400_saying_the_limit(server: str) -> None:
    before = batch_stats(server, WHOLE)
    refused = predict(server, WHOLE, xs(WHOLE_LIMIT + 1))
    message = error_message(refused.response, 400)
    assert f"at most {WHOLE_LIMIT} rows" in message and "split" in message, message
    assert "max_queue_rows" in message, message
    unchanged(before, batch_stats(server, WHOLE), "batches", "rows", "requests", "rejected")
    # the limit itself is admitted
    assert answer_of(predict(server, WHOLE, xs(WHOLE_LIMIT)).response) == doubled(xs(WHOLE_LIMIT))


def test_a_request_is_admitted_or_refused_whole_and_small_ones_still_fit(server: str) -> None:
    """While a request of half the queue's rows runs (10 batches), one of 40 rows does not fit
    beside it until 6 of those batches have run (it must leave as many rows free as it takes):
    429 with Retry-After, and none of its rows runs. A one-row request fits; the 40 rows are
    admitted once the first is done."""
    before = batch_stats(server, WHOLE)
    first_rows, second_rows = xs(WHOLE_LIMIT), xs(40, start=1000.0)
    with ThreadPoolExecutor(1) as pool:
        first = start_and_wait_for_its_first_batch(pool, server, WHOLE, first_rows)
        second = predict(server, WHOLE, second_rows)
        assert "queue" in error_message(second.response, 429)
        small = predict(server, WHOLE, [3.0])
        answered = first.result()

    assert int(second.response.headers["Retry-After"]) >= 1, second.response.headers
    assert small.ended < answered.ended, "the small request did not fit beside the first"
    assert answer_of(small.response) == [6.0]
    assert answer_of(answered.response) == doubled(first_rows)
    assert answer_of(predict(server, WHOLE, second_rows).response) == doubled(second_rows)

    after = batch_stats(server, WHOLE)
    # every row of the admitted requests ran, none of the refused attempt's
    assert after["rows"] - before["rows"] == len(first_rows) + 1 + len(second_rows), after
    assert after["requests"] - before["requests"] == 3, after
    assert after["rejected"] - before["rejected"] == 1, after
