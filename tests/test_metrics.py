"""Observability through a real server: `GET /metrics` (every metric of the contract, with its
type and labels; exact moves for a known mix of requests; bounded labels; load failures;
saturation; `promtool check metrics`), request ids and the JSON access log.

The main server serves
- plus: y = 0.5x + 2, batching with max_batch_size 8 and max_batch_delay_ms 200, so
  concurrent single-row requests coalesce and every batch is padded to 1, 2, 4 or 8 rows;
- held: the same model, max_batch_size 4 and max_batch_delay_ms 1000 (a lone request is held
  open for a second);
- sleepy: y = 2x after sleeping SLEEP_SECONDS, max_batch_size 1 and max_queue_size 1, so with
  one request running and one queued a third is refused (429) deterministically.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import math
import platform
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import tensorflow as tf
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from service.core.repository import ModelRepository
from service.core.serving_config import ModelConfig, ServingConfig
from service.logs import ACCESS_LOGGER, JSONFormatter
from service.metrics import Metrics
from service.settings import Settings
from tests.saved_models import copy_versions, write_config, write_corrupt_version
from tests.server import running_server, wait_for
from tests.system_tools import require_program
from tests.test_connection import connect, read_response

pytest_plugins = ["tests.gateway_fixtures"]

SLEEP_SECONDS = 1.0
"""How long one call of `sleepy` takes (a sleep, not a busy loop: independent of CPU load)."""

PLUS_SIZES = (1, 2, 4, 8)  # allowed batch sizes of plus (padding: 3 rows run as 4)
HELD_SIZES = (1, 2, 4)

PREDICT = "/v1/models/{model_method}"
INFER = "/v2/models/{model}/infer"
TFSERVING, V2, OTHER = "tfserving_rest", "v2_rest", "other"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")

Labels = frozenset[tuple[str, str]]


# --- a model that takes a known time ------------------------------------------------------


def export_sleepy(base: Path, name: str, seconds: float = SLEEP_SECONDS) -> Path:
    """<base>/<name>/1: `serving_default` x float32 [None] -> y = 2x, after sleeping `seconds`
    (tf.data's sleep transformation: the thread waits without using a CPU core)."""
    from tensorflow.python.data.experimental.ops.testing import sleep  # no public equivalent

    microseconds = int(seconds * 1e6)

    class Sleepy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            # take(1): the sleep runs once (not again for the end of the sequence)
            pause = tf.data.Dataset.from_tensors(tf.constant(0.0)).apply(sleep(microseconds))
            waited = pause.take(1).reduce(tf.constant(0.0), lambda total, zero: total + zero)
            return {"y": 2.0 * x + waited}

    module = Sleepy()
    path = base / name / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


# --- scrapes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer, parsed with prometheus_client's parser (it names counter families
    without `_total`; their samples keep it)."""

    text: str
    families: dict[str, Metric]
    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        families: dict[str, Metric] = {}
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            assert family.name not in families, f"family {family.name} exposed twice"
            families[family.name] = family
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in samples, f"series exposed twice: {key}"
                samples[key] = sample.value
        return cls(text, families, samples)

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no {name}{labels}; has {list(self.series(name))}"
        return self.samples[key]

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for labels in self.series(name)}

    def all_series(self) -> set[tuple[str, Labels]]:
        return {key for key in self.samples if key[0].startswith("modelserve_")}


def scrape(url: str) -> Scrape:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert re.fullmatch(  # Prometheus' text format (0.0.4, or 1.0.0 in newer prometheus_client)
        r"text/plain; version=\d+\.\d+\.\d+(; charset=utf-8)?", response.headers["content-type"]
    ), response.headers
    return Scrape.parse(response.text)


def moved(before: Scrape, after: Scrape, name: str, *by: str) -> dict[tuple[str, ...], float]:
    """How far the series of `name` moved, summed by the labels `by`; only non-zero moves."""
    earlier, later = before.series(name), after.series(name)
    assert set(earlier) <= set(later), f"series of {name} vanished: {set(earlier) - set(later)}"
    totals: dict[tuple[str, ...], float] = {}
    for labels, value in later.items():
        key = tuple(dict(labels)[label] for label in by)
        totals[key] = totals.get(key, 0.0) + value - earlier.get(labels, 0.0)
    return {key: total for key, total in totals.items() if total}


def change(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """One series' move (a series first seen in `after` moved from 0)."""
    earlier = before.samples.get((name, frozenset(labels.items())), 0.0)
    return after.value(name, **labels) - earlier


def batch_size_buckets(before: Scrape, after: Scrape, model: str) -> dict[float, float]:
    """How far each cumulative bucket of modelserve_batch_size moved, by `le` (inf: +Inf)."""
    return {
        float(dict(labels)["le"]): change(
            before, after, "modelserve_batch_size_bucket", **dict(labels)
        )
        for labels in after.series("modelserve_batch_size_bucket")
        if dict(labels)["model"] == model
    }


def padding_from_buckets(buckets: dict[float, float], rows: float) -> float:
    """Rows padding must have added: every batch is padded to the allowed size at the top of
    its bucket (the buckets are the allowed sizes), minus the real rows."""
    padded, below = 0.0, 0.0
    for size in sorted(le for le in buckets if math.isfinite(le)):
        padded += size * (buckets[size] - below)
        below = buckets[size]
    assert buckets[math.inf] == below, f"batches above the largest allowed size: {buckets}"
    return padded - rows


def promtool_check(text: str) -> None:
    promtool = require_program(
        "promtool", package="prometheus", needed_for="checking the metrics exposition"
    )
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    problems = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, f"promtool check metrics failed:\n{problems}"


# --- the access log -----------------------------------------------------------------------


class AccessLog:
    """Lines of the `modelserve.access` logger, formatted by JSONFormatter."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def entries(self) -> list[dict[str, Any]]:
        lines = self._stream.getvalue().splitlines()
        entries = [json.loads(line) for line in lines]
        assert all(isinstance(entry, dict) for entry in entries), lines
        return entries

    def for_ids(
        self, request_ids: set[str], timeout: float = 10
    ) -> dict[str, list[dict[str, Any]]]:
        """Every line of each request id, once each id has at least one (the middleware logs
        after the response's last byte, so a client may be a moment ahead of the log)."""

        def lines() -> dict[str, list[dict[str, Any]]] | None:
            found: dict[str, list[dict[str, Any]]] = {}
            for entry in self.entries():
                if entry.get("request_id") in request_ids:
                    found.setdefault(entry["request_id"], []).append(entry)
            return found if set(found) == request_ids else None

        return wait_for(lines, timeout=timeout, what=f"access log lines of {sorted(request_ids)}")

    def line(self, request_id: str) -> dict[str, Any]:
        lines = self.for_ids({request_id})[request_id]
        assert len(lines) == 1, lines
        return lines[0]


@pytest.fixture(scope="module")
def access_log() -> Iterator[AccessLog]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield AccessLog(stream)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    metrics: Metrics


@pytest.fixture(scope="module")
def server(
    model_library: Path, tmp_path_factory: pytest.TempPathFactory, access_log: AccessLog
) -> Iterator[Server]:
    """plus, held and sleepy (see the module docstring), with a Metrics of the test's own."""
    root = tmp_path_factory.mktemp("metrics")
    repo = root / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1])
    copy_versions(model_library, repo / "held", "plus", [1])
    export_sleepy(repo, "sleepy")
    config = write_config(
        root / "serving.yaml",
        [
            {
                "name": "plus",
                "batching": {
                    "max_batch_size": 8,
                    "max_batch_delay_ms": 200,
                    "allowed_batch_sizes": list(PLUS_SIZES),
                },
            },
            {"name": "held", "batching": {"max_batch_size": 4, "max_batch_delay_ms": 1000}},
            {"name": "sleepy", "batching": {"max_batch_size": 1, "max_queue_size": 1}},
        ],
    )
    metrics = Metrics()
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, metrics=metrics, timeout=120) as url:
        yield Server(url, metrics)


@pytest.fixture(scope="module")
def failing_server(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second app in the process: `broken` has only a corrupt version; `mixed` serves a good
    version 1 next to a corrupt version 2 (policy all). Never ready, so not waited for."""
    root = tmp_path_factory.mktemp("failing")
    repo = root / "repo"
    write_corrupt_version(repo, "broken", 1)
    copy_versions(model_library, repo / "mixed", "plus", [1])
    write_corrupt_version(repo, "mixed", 2)
    config = write_config(
        root / "serving.yaml", [{"name": "broken"}, {"name": "mixed", "version_policy": "all"}]
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, wait_ready=False) as url:

        def settled() -> bool:
            metrics = scrape(url)
            failures = metrics.series("modelserve_model_load_failures_total")
            return (
                len(failures) == 2
                and all(failures.values())
                and bool(metrics.value("modelserve_model_ready", model="mixed"))
            )

        wait_for(settled, timeout=60, what="both load failures and mixed version 1")
        yield url


# --- the known mix of requests ------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request of the mix and what it must count as."""

    request_id: str
    phase: str
    method: str
    path: str
    route: str
    protocol: str
    model: str  # "" unless the server knows the model
    status: int
    batch_size: int | None  # rows of the batch it ran in, when known in advance

    @property
    def version(self) -> int | None:
        return 1 if self.model else None  # every model here serves version 1 only

    @property
    def series(self) -> tuple[str, str, str, str]:
        return (self.model, self.protocol, self.route, str(self.status))


class Traffic:
    """Sends requests, each with an X-Request-ID of its own, and records each one (thread-safe:
    the mix sends from several threads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[Sent] = []
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def _request_id(self, phase: str) -> str:
        with self._lock:
            return f"mix-{phase}-{next(self._numbers)}"

    def send(
        self,
        method: str,
        path: str,
        *,
        phase: str,
        route: str,
        protocol: str,
        model: str = "",
        status: int = 200,
        batch_size: int | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        request_id = self._request_id(phase)
        response = httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            content=content,
            headers={"X-Request-ID": request_id, **(headers or {})},
            timeout=60,
        )
        assert response.status_code == status, f"{path}: {response.status_code} {response.text}"
        assert response.headers.get_list("x-request-id") == [request_id], response.headers
        sent = Sent(request_id, phase, method, path, route, protocol, model, status, batch_size)
        with self._lock:
            self.sent.append(sent)
        return response

    def predict(
        self,
        model: str,
        xs: list[float],
        *,
        phase: str,
        status: int = 200,
        known: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        return self.send(
            "POST",
            f"/v1/models/{model}:predict",
            phase=phase,
            route=PREDICT,
            protocol=TFSERVING,
            model=model if known else "",
            status=status,
            batch_size=len(xs) if status == 200 else None,
            body={"instances": xs},
            **kwargs,
        )

    def infer(self, model: str, xs: list[float], *, phase: str) -> httpx.Response:
        return self.send(
            "POST",
            f"/v2/models/{model}/infer",
            phase=phase,
            route=INFER,
            protocol=V2,
            model=model,
            batch_size=len(xs),
            body=infer_body(xs),
        )

    def scrape(self, phase: str) -> Scrape:
        response = self.send("GET", "/metrics", phase=phase, route="/metrics", protocol=OTHER)
        return Scrape.parse(response.text)

    def scrape_until(self, check: Callable[[Scrape], bool], what: str) -> Scrape:
        def probe() -> Scrape | None:
            metrics = self.scrape("poll")
            return metrics if check(metrics) else None

        return wait_for(probe, timeout=30, what=what, interval=0.02)

    def concurrently(self, model: str, xs: list[float], *, phase: str) -> list[httpx.Response]:
        """One single-row request per x, all at once; every other one over V2."""
        requests = []
        for i, x in enumerate(xs):
            if i % 2:
                requests.append((f"/v2/models/{model}/infer", infer_body([x]), INFER, V2))
            else:
                requests.append(
                    (f"/v1/models/{model}:predict", {"instances": [x]}, PREDICT, TFSERVING)
                )
        ids = [self._request_id(phase) for _ in requests]

        async def send_all() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post(path, json=body, headers={"X-Request-ID": request_id})
                            for request_id, (path, body, _, _) in zip(ids, requests, strict=True)
                        )
                    )
                )

        responses = asyncio.run(send_all())
        for request_id, (path, _, route, protocol), response in zip(
            ids, requests, responses, strict=True
        ):
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == request_id
            with self._lock:
                self.sent.append(
                    Sent(request_id, phase, "POST", path, route, protocol, model, 200, None)
                )
        return responses


def infer_body(xs: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(xs)], "datatype": "FP32", "data": xs}]}


def answer(response: httpx.Response) -> list[float]:
    body = response.json()
    values: list[float] = (
        body["predictions"] if "predictions" in body else body["outputs"][0]["data"]
    )
    return values


def plus(xs: list[float]) -> list[float]:
    return [0.5 * x + 2.0 for x in xs]


@dataclass(frozen=True)
class Observed:
    sent: list[Sent]
    before: Scrape
    after: Scrape
    coalesce_before: Scrape  # around the concurrent requests to plus
    coalesce_after: Scrape
    running: Scrape  # sleepy: one batch running, nothing queued
    queued: Scrape  # sleepy: one batch running, one request queued
    lines: dict[str, list[dict[str, Any]]]  # access log lines by request id

    def moved(self, name: str, *by: str) -> dict[tuple[str, ...], float]:
        """How `name` moved between `before` and `after`, by the labels `by` (see moved)."""
        return moved(self.before, self.after, name, *by)


SEQUENTIAL_PREDICTS = [[1.0, 2.0, 5.0]] * 3  # 3 rows: padded to 4
SEQUENTIAL_INFERS = [[0.5, 1.5]] * 2  # 2 rows: an allowed size, no padding
COALESCED = [float(i) for i in range(8)]


@pytest.fixture(scope="module")
def observed(server: Server, access_log: AccessLog) -> Observed:
    """Sends the known mix between two scrapes."""
    traffic = Traffic(server.url)
    before = traffic.scrape("before")

    # sequential requests to plus: each is held open for max_batch_delay_ms, alone
    for xs in SEQUENTIAL_PREDICTS:
        assert answer(traffic.predict("plus", xs, phase="sequential")) == plus(xs)
    for xs in SEQUENTIAL_INFERS:
        assert answer(traffic.infer("plus", xs, phase="sequential")) == plus(xs)

    # concurrent single-row requests, which coalesce
    coalesce_before = traffic.scrape("coalesce-scrape")
    for x, response in zip(
        COALESCED, traffic.concurrently("plus", COALESCED, phase="coalesce"), strict=True
    ):
        assert answer(response) == plus([x])
    coalesce_after = traffic.scrape("coalesce-scrape")

    # refused before running: a bad body, unknown models, no route at all
    traffic.send(
        "POST",
        "/v1/models/plus:predict",
        phase="invalid",
        route=PREDICT,
        protocol=TFSERVING,
        model="plus",
        status=400,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    traffic.predict("nope", [1.0], phase="unknown", status=404, known=False)
    traffic.send(
        "POST",
        "/v2/models/nope/infer",
        phase="unknown",
        route=INFER,
        protocol=V2,
        status=404,
        body=infer_body([1.0]),
    )
    traffic.send(
        "GET", "/no/such/path", phase="unknown", route="unmatched", protocol=OTHER, status=404
    )
    traffic.send("GET", "/healthz", phase="health", route="/healthz", protocol=OTHER)

    def sleepy(name: str) -> Callable[[Scrape], float]:
        return lambda metrics: metrics.value(name, model="sleepy", version="1")

    in_flight, depth = sleepy("modelserve_batches_in_flight"), sleepy("modelserve_queue_depth")
    with ThreadPoolExecutor(2) as pool:
        # sleepy: one running, one queued (max_queue_size 1): a third is refused at once
        first = pool.submit(traffic.predict, "sleepy", [1.0], phase="hold")
        running = traffic.scrape_until(lambda m: in_flight(m) == 1, "sleepy to run a batch")
        second = pool.submit(traffic.predict, "sleepy", [2.0], phase="hold")
        queued = traffic.scrape_until(lambda m: depth(m) == 1, "a request queued on sleepy")
        refused = traffic.predict("sleepy", [3.0], phase="refused", status=429)
        assert int(refused.headers["Retry-After"]) >= 1, refused.headers
        assert answer(first.result(timeout=60)) == [2.0]
        assert answer(second.result(timeout=60)) == [4.0]

        # and a request whose deadline passes while it waits behind a running batch
        third = pool.submit(traffic.predict, "sleepy", [4.0], phase="hold")
        traffic.scrape_until(lambda m: in_flight(m) == 1, "sleepy to run a batch")
        traffic.predict(
            "sleepy", [5.0], phase="late", status=504, headers={"X-Request-Timeout": "100"}
        )
        assert answer(third.result(timeout=60)) == [8.0]

    after = scrape(server.url)  # not counted in itself
    lines = access_log.for_ids({sent.request_id for sent in traffic.sent})
    return Observed(
        traffic.sent, before, after, coalesce_before, coalesce_after, running, queued, lines
    )


def sent_counts(observed: Observed, *fields: str) -> dict[tuple[str, ...], float]:
    return dict(Counter(tuple(str(getattr(s, f)) for f in fields) for s in observed.sent))


# --- exact moves --------------------------------------------------------------------------


def test_requests_total_moves_by_exactly_the_requests_sent(observed: Observed) -> None:
    counted = observed.moved("modelserve_requests_total", "model", "protocol", "route", "code")
    expected = Counter(sent.series for sent in observed.sent)
    assert counted == dict(expected)
    # the mix reached every kind of series it is meant to
    assert {
        ("plus", TFSERVING, PREDICT, "200"),
        ("plus", V2, INFER, "200"),
        ("plus", TFSERVING, PREDICT, "400"),
        ("sleepy", TFSERVING, PREDICT, "429"),
        ("sleepy", TFSERVING, PREDICT, "504"),
        ("", TFSERVING, PREDICT, "404"),
        ("", V2, INFER, "404"),
        ("", OTHER, "unmatched", "404"),
        ("", OTHER, "/healthz", "200"),
        ("", OTHER, "/metrics", "200"),
    } <= set(counted)


def test_request_durations_count_every_request(observed: Observed) -> None:
    counted = observed.moved(
        "modelserve_request_duration_seconds_count", "model", "protocol", "route"
    )
    assert counted == sent_counts(observed, "model", "protocol", "route")
    # in seconds: 3 sleepy requests ran, each for SLEEP_SECONDS at least
    seconds = change(
        observed.before,
        observed.after,
        "modelserve_request_duration_seconds_sum",
        model="sleepy",
        protocol=TFSERVING,
        route=PREDICT,
    )
    assert 3 * SLEEP_SECONDS * 0.95 < seconds < 60, seconds


def test_rejections_count_each_refused_request_by_reason(observed: Observed) -> None:
    rejected = observed.moved("modelserve_requests_rejected_total", "model", "reason")
    # 404s are not rejections; an unknown model never becomes a label value
    assert rejected == {
        ("plus", "invalid"): 1,
        ("sleepy", "queue_full"): 1,
        ("sleepy", "deadline"): 1,
    }


def test_batch_metrics_of_the_batched_model_add_up(observed: Observed) -> None:
    before, after = observed.before, observed.after

    def moved_by(name: str) -> float:
        return change(before, after, name, model="plus", version="1")

    batches = moved(before, after, "modelserve_batches_total", "model", "reason")
    reasons = {reason: count for (model, reason), count in batches.items() if model == "plus"}
    total = sum(reasons.values())
    # alone, the sequential requests wait out the delay; together, the batch fills or waits too
    assert set(reasons) <= {"delay", "full"}, reasons
    assert reasons["delay"] >= len(SEQUENTIAL_PREDICTS) + len(SEQUENTIAL_INFERS), reasons

    requests = len(SEQUENTIAL_PREDICTS) + len(SEQUENTIAL_INFERS) + len(COALESCED)
    rows = sum(map(len, SEQUENTIAL_PREDICTS + SEQUENTIAL_INFERS)) + len(COALESCED)
    assert moved_by("modelserve_batch_rows_total") == rows
    assert moved_by("modelserve_queue_wait_seconds_count") == requests  # one wait per request
    assert moved_by("modelserve_batch_duration_seconds_count") == total
    assert moved_by("modelserve_batch_size_count") == total
    assert moved_by("modelserve_batch_size_sum") == rows
    buckets = batch_size_buckets(before, after, "plus")
    assert moved_by("modelserve_batch_padding_rows_total") == padding_from_buckets(buckets, rows)


def test_batch_size_buckets_of_sequential_requests_are_exact(observed: Observed) -> None:
    """3 batches of 3 rows (padded to 4) and 2 of 2 rows, cumulative at 1, 2, 4, 8, +Inf."""
    before, after = observed.before, observed.coalesce_before
    buckets = batch_size_buckets(before, after, "plus")
    assert buckets == {1.0: 0, 2.0: 2, 4.0: 5, 8.0: 5, math.inf: 5}
    padding = change(
        before, after, "modelserve_batch_padding_rows_total", model="plus", version="1"
    )
    assert padding == len(SEQUENTIAL_PREDICTS)  # one row each, 3 -> 4


def test_concurrent_requests_coalesce_into_fewer_batches(observed: Observed) -> None:
    before, after = observed.coalesce_before, observed.coalesce_after
    buckets = batch_size_buckets(before, after, "plus")
    batches = buckets[math.inf]
    assert 1 <= batches < len(COALESCED), buckets
    assert buckets[1.0] < batches, f"no batch of more than one row: {buckets}"
    assert change(before, after, "modelserve_batch_rows_total", model="plus", version="1") == 8
    reasons = moved(before, after, "modelserve_batches_total", "model", "reason")
    assert sum(reasons.values()) == batches
    assert set(reasons) <= {("plus", "full"), ("plus", "delay")}, reasons


def test_batch_metrics_of_the_one_at_a_time_model(observed: Observed) -> None:
    """sleepy ran 3 batches of one row (full: max_batch_size 1); the refused and the expired
    request never ran."""
    before, after = observed.before, observed.after

    def moved_by(name: str) -> float:
        return change(before, after, name, model="sleepy", version="1")

    reasons = moved(before, after, "modelserve_batches_total", "model", "reason")
    assert {k: v for k, v in reasons.items() if k[0] == "sleepy"} == {("sleepy", "full"): 3}
    assert moved_by("modelserve_batch_rows_total") == 3
    assert moved_by("modelserve_batch_padding_rows_total") == 0
    assert moved_by("modelserve_queue_wait_seconds_count") == 3
    assert moved_by("modelserve_batch_duration_seconds_count") == 3
    assert batch_size_buckets(before, after, "sleepy") == {1.0: 3, math.inf: 3}
    # in seconds: each batch slept; the queued request waited for the running one
    assert 3 * SLEEP_SECONDS * 0.95 < moved_by("modelserve_batch_duration_seconds_sum") < 60
    assert SLEEP_SECONDS * 0.5 < moved_by("modelserve_queue_wait_seconds_sum") < 60


def test_saturation_and_queue_gauges_while_requests_wait(observed: Observed) -> None:
    running, queued = observed.running, observed.queued
    assert running.value("modelserve_saturation", model="sleepy") == 1.0  # 1 row / 1 at once
    assert queued.value("modelserve_queue_depth", model="sleepy", version="1") == 1
    assert queued.value("modelserve_batches_in_flight", model="sleepy", version="1") == 1
    assert queued.value("modelserve_saturation", model="sleepy") == 2.0  # queue grows
    for model in ("plus", "held", "sleepy"):
        assert observed.after.value("modelserve_saturation", model=model) == 0
        assert observed.after.value("modelserve_queue_depth", model=model, version="1") == 0
        assert observed.after.value("modelserve_batches_in_flight", model=model, version="1") == 0


def test_saturation_counts_a_batch_held_open_by_the_delay(server: Server) -> None:
    """held (max_batch_size 4, max_batch_delay_ms 1000): a lone request waits a second for
    company, on an instance it has taken; that is load, not an idle model."""
    url = server.url

    def holding() -> Scrape | None:
        metrics = scrape(url)
        in_flight = metrics.value("modelserve_batches_in_flight", model="held", version="1")
        return metrics if in_flight == 1 else None

    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(
            httpx.post, f"{url}/v1/models/held:predict", json={"instances": [4.0]}, timeout=60
        )
        held = wait_for(holding, timeout=30, what="held to take its instance", interval=0.02)
        still_waiting = not request.done()
        response = request.result(timeout=60)
    assert still_waiting, "the request was answered before its delay ran out"
    assert response.status_code == 200, response.text
    assert answer(response) == plus([4.0])
    assert held.value("modelserve_saturation", model="held") == 0.25  # 1 row of 4
    after = scrape(url)
    assert after.value("modelserve_saturation", model="held") == 0
    assert after.value("modelserve_batches_in_flight", model="held", version="1") == 0


# --- the contract: names, types, labels ---------------------------------------------------

MV = frozenset({"model", "version"})
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "modelserve_requests": ("counter", frozenset({"model", "protocol", "route", "code"})),
    "modelserve_requests_rejected": ("counter", frozenset({"model", "reason"})),
    "modelserve_batches": ("counter", MV | {"reason"}),
    "modelserve_batch_rows": ("counter", MV),
    "modelserve_batch_padding_rows": ("counter", MV),
    "modelserve_model_load_failures": ("counter", frozenset({"model"})),
    "modelserve_request_duration_seconds": ("histogram", frozenset({"model", "protocol", "route"})),
    "modelserve_queue_wait_seconds": ("histogram", MV),
    "modelserve_batch_duration_seconds": ("histogram", MV),
    "modelserve_batch_size": ("histogram", MV),
    "modelserve_queue_depth": ("gauge", MV),
    "modelserve_batches_in_flight": ("gauge", MV),
    "modelserve_model_load_seconds": ("gauge", MV),
    "modelserve_model_version_available": ("gauge", MV),
    "modelserve_model_ready": ("gauge", frozenset({"model"})),
    # not `instance`: Prometheus sets that label to the scraped target
    "modelserve_instance_info": ("gauge", MV | {"model_instance", "device"}),
    "modelserve_saturation": ("gauge", frozenset({"model"})),
    "modelserve_build_info": ("gauge", frozenset({"version", "tensorflow", "python"})),
    "modelserve_gpu_memory_bytes": ("gauge", frozenset({"device", "kind"})),
}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_every_metric_of_the_contract_has_its_type_and_labels(
    observed: Observed, name: str
) -> None:
    kind, labels = CONTRACT[name]
    family = observed.after.families.get(name)
    assert family is not None, f"{name} missing; families: {sorted(observed.after.families)}"
    assert family.type == kind
    if name == "modelserve_gpu_memory_bytes":  # current and peak per GPU; none without GPUs
        assert len(family.samples) == 2 * len(tf.config.list_logical_devices("GPU"))
        return
    assert family.samples, f"{name} has no samples"
    for sample in family.samples:
        assert sample.name in {name + suffix for suffix in SUFFIXES[kind]}, sample
        extra = {"le"} if sample.name.endswith("_bucket") else set()
        assert set(sample.labels) == labels | extra, sample


def test_batch_size_buckets_are_the_allowed_batch_sizes(observed: Observed) -> None:
    for model, sizes in (("plus", PLUS_SIZES), ("sleepy", (1,))):
        les = {
            dict(labels)["le"]
            for labels in observed.after.series("modelserve_batch_size_bucket")
            if dict(labels)["model"] == model
        }
        assert {float(le) for le in les} == {*map(float, sizes), math.inf}, (model, les)


def test_latency_buckets_span_sub_milliseconds_to_seconds(observed: Observed) -> None:
    les = sorted(
        float(dict(labels)["le"])
        for labels in observed.after.series("modelserve_request_duration_seconds_bucket")
        if dict(labels)["route"] == "/healthz"
    )
    assert les[-1] == math.inf
    assert les[0] <= 0.001 and les[-2] >= 10, les


def test_model_state_metrics_of_a_healthy_server(observed: Observed) -> None:
    after = observed.after
    models = {"plus", "held", "sleepy"}
    assert after.label_values("modelserve_model_ready", "model") == models
    for model in models:
        assert after.value("modelserve_model_ready", model=model) == 1
        assert after.value("modelserve_model_version_available", model=model, version="1") == 1
        assert after.value("modelserve_model_load_failures_total", model=model) == 0
        (instance,) = [
            dict(labels)
            for labels in after.series("modelserve_instance_info")
            if dict(labels)["model"] == model
        ]
        assert instance["version"] == "1" and instance["model_instance"] == "0", instance
        assert "CPU" in instance["device"].upper(), instance
    assert all(value == 1 for value in after.series("modelserve_instance_info").values())
    # load time includes warm-up, which runs sleepy once
    assert 0 < after.value("modelserve_model_load_seconds", model="plus", version="1") < 60
    assert after.value("modelserve_model_load_seconds", model="sleepy", version="1") >= 0.9


def test_build_and_process_metrics(observed: Observed) -> None:
    after = observed.after
    (build,) = after.series("modelserve_build_info").items()
    assert dict(build[0]) == {
        "version": __version__,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }
    assert build[1] == 1
    assert after.families["process_resident_memory_bytes"].type == "gauge"
    assert after.value("process_resident_memory_bytes") > 1e6
    for name in ("python_gc_objects_collected", "python_gc_collections"):
        assert after.families[name].type == "counter"
        assert after.label_values(f"{name}_total", "generation") == {"0", "1", "2"}


def test_promtool_accepts_the_exposition(observed: Observed) -> None:
    promtool_check(observed.after.text)


# --- bounded labels -----------------------------------------------------------------------


def test_route_labels_are_templates_never_raw_paths(server: Server, observed: Observed) -> None:
    openapi = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    templates = set(openapi["paths"]) | {"unmatched"}
    routes = observed.after.label_values("modelserve_requests_total", "route")
    assert routes <= templates, routes - templates
    assert routes >= {PREDICT, INFER, "/healthz", "/metrics", "/readyz", "unmatched"}
    durations = observed.after.label_values("modelserve_request_duration_seconds_count", "route")
    assert durations == routes
    raw_paths = {sent.path for sent in observed.sent} - templates
    assert raw_paths, "the mix sent no path that differs from its template"
    values = {value for _, labels in observed.after.all_series() for _, value in labels}
    assert not raw_paths & values


UNKNOWN_MODEL_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/models/{name}:predict", {"instances": [1.0]}),
    ("POST", "/v1/models/{name}/versions/1:predict", {"instances": [1.0]}),
    ("POST", "/v1/models/{name}/labels/stable:predict", {"instances": [1.0]}),
    ("POST", "/v2/models/{name}/infer", infer_body([1.0])),
    ("GET", "/v1/models/{name}", None),
    ("GET", "/v1/models/{name}/metadata", None),
    ("GET", "/v2/models/{name}", None),
    ("GET", "/v2/models/{name}/ready", None),
    ("GET", "/{name}/anything", None),
    ("POST", "/v1/models/{name}:explode", {"instances": [1.0]}),
]


def test_unknown_model_names_add_no_series(server: Server) -> None:
    def send_all(names: list[str]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for name, (method, path, body) in zip(
                names, itertools.cycle(UNKNOWN_MODEL_REQUESTS), strict=False
            ):
                response = client.request(method, path.format(name=name), json=body)
                assert response.status_code == 404, (path, response.status_code, response.text)

    send_all([f"warmup-{uuid.uuid4().hex[:8]}" for _ in UNKNOWN_MODEL_REQUESTS])
    before = scrape(server.url)
    names = [f"nope-{uuid.uuid4().hex}" for _ in range(50)]
    send_all(names)
    after = scrape(server.url)

    new_series = after.all_series() - before.all_series()
    assert not new_series, new_series
    counted = moved(before, after, "modelserve_requests_total", "model", "code")
    assert counted == {("", "404"): 50, ("", "200"): 1}  # and the scrape before
    values = {value for _, labels in after.all_series() for _, value in labels}
    assert not any(name in value for name in names for value in values)


# --- load failures ------------------------------------------------------------------------


def test_load_failures_and_version_states(failing_server: str) -> None:
    metrics = scrape(failing_server)
    assert metrics.value("modelserve_model_load_failures_total", model="broken") == 1
    assert metrics.value("modelserve_model_load_failures_total", model="mixed") == 1
    assert metrics.value("modelserve_model_version_available", model="broken", version="1") == 0
    assert metrics.value("modelserve_model_version_available", model="mixed", version="1") == 1
    assert metrics.value("modelserve_model_version_available", model="mixed", version="2") == 0
    assert metrics.value("modelserve_model_ready", model="broken") == 0
    assert metrics.value("modelserve_model_ready", model="mixed") == 1
    assert metrics.value("modelserve_saturation", model="broken") == 0
    # a failed version runs nowhere and took no load time
    instances = metrics.series("modelserve_instance_info")
    assert {(dict(k)["model"], dict(k)["version"]) for k in instances} == {("mixed", "1")}
    loaded = metrics.series("modelserve_model_load_seconds")
    assert {(dict(k)["model"], dict(k)["version"]) for k in loaded} == {("mixed", "1")}
    assert httpx.get(f"{failing_server}/readyz", timeout=30).status_code == 503
    promtool_check(metrics.text)


def test_two_apps_in_one_process_have_their_own_registries(
    server: Server, failing_server: str
) -> None:
    healthz = ("", OTHER, "/healthz", "200")
    first_before, second_before = scrape(server.url), scrape(failing_server)
    for _ in range(3):
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    first_after, second_after = scrape(server.url), scrape(failing_server)

    by = ("model", "protocol", "route", "code")
    first = moved(first_before, first_after, "modelserve_requests_total", *by)
    second = moved(second_before, second_after, "modelserve_requests_total", *by)
    assert first == {healthz: 3, ("", OTHER, "/metrics", "200"): 1}
    assert second == {("", OTHER, "/metrics", "200"): 1}
    assert first_after.label_values("modelserve_model_ready", "model") == {"plus", "held", "sleepy"}
    assert second_after.label_values("modelserve_model_ready", "model") == {"broken", "mixed"}
    # the app counts into the Metrics it was given, and nothing into the global registry
    in_process = server.metrics.registry.get_sample_value(
        "modelserve_requests_total", dict(zip(by, healthz, strict=True))
    )
    assert in_process == first_after.value(
        "modelserve_requests_total", **dict(zip(by, healthz, strict=True))
    )
    assert not [m.name for m in REGISTRY.collect() if m.name.startswith("modelserve_")]


def test_metrics_watching_a_new_repository_exposes_each_family_once(model_library: Path) -> None:
    """An app whose lifespan runs twice (a restarted server, a second test client) watches a
    new repository; the exposition must still name every family once."""
    metrics = Metrics()
    config = ServingConfig(
        models=[ModelConfig(name="plus", base_path=model_library / "plus")], source="test"
    )
    with ThreadPoolExecutor(1) as executor:
        for _ in range(2):
            metrics.watch(ModelRepository(config, poll_interval=0, inference_executor=executor))
    text = metrics.exposition().decode()
    Scrape.parse(text)  # asserts no family or series twice
    names = re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    promtool_check(text)


# --- request ids and the access log -------------------------------------------------------

ACCESS_FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "method",
    "route",
    "path",
    "model",
    "version",
    "status",
    "latency_ms",
    "batch_size",
    "client_pause_ms",
    "request_id",
}


def check_line(line: dict[str, Any], sent: Sent) -> None:
    where = f"{sent.request_id}: {line}"
    assert set(line) == ACCESS_FIELDS, where
    assert line["level"] == "info" and line["logger"] == ACCESS_LOGGER, where
    assert line["message"] == f"{sent.method} {sent.path} {sent.status}", where
    assert line["method"] == sent.method, where
    assert line["route"] == sent.route, where
    assert line["path"] == sent.path, where
    assert line["model"] == (sent.model or None), where
    assert line["version"] == sent.version, where
    assert line["status"] == sent.status, where
    assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0, where
    logged_at = datetime.fromisoformat(line["time"])
    assert logged_at.utcoffset() == timedelta(0), where


def test_access_log_has_one_line_per_request(observed: Observed) -> None:
    for sent in observed.sent:
        (line,) = observed.lines[sent.request_id]
        check_line(line, sent)
        if sent.phase != "coalesce":
            assert line["batch_size"] == sent.batch_size, (sent, line)


def test_access_log_latency_is_the_request_duration(observed: Observed) -> None:
    holds = [sent for sent in observed.sent if sent.phase == "hold"]
    assert len(holds) == 3
    for sent in holds:
        (line,) = observed.lines[sent.request_id]
        assert SLEEP_SECONDS * 900 < line["latency_ms"] < 60_000, line
    for sent in observed.sent:
        if sent.phase in ("refused", "unknown", "health"):
            (line,) = observed.lines[sent.request_id]
            assert line["latency_ms"] < SLEEP_SECONDS * 500, line  # refused at once


def test_access_log_batch_sizes_of_coalesced_requests(observed: Observed) -> None:
    """Each coalesced single-row request logs the real rows of its batch: b requests for every
    batch of b rows, as many batches as the metrics counted, and not just one row each."""
    sizes = Counter(
        observed.lines[sent.request_id][0]["batch_size"]
        for sent in observed.sent
        if sent.phase == "coalesce"
    )
    assert sum(sizes.values()) == len(COALESCED), sizes
    assert all(isinstance(size, int) and count % size == 0 for size, count in sizes.items()), sizes
    batches = batch_size_buckets(observed.coalesce_before, observed.coalesce_after, "plus")
    assert sum(count // size for size, count in sizes.items()) == batches[math.inf], sizes
    assert max(sizes) > 1, sizes


@pytest.mark.parametrize(
    "request_id",
    ["abc-123", "0af7651916cd43dd8448eb211c80319c", "trace.id:1/2+3=4_5", "x" * 128],
)
def test_a_sane_client_request_id_is_echoed_and_logged(
    server: Server, access_log: AccessLog, request_id: str
) -> None:
    response = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": request_id}, timeout=30)
    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") == [request_id]
    line = access_log.line(request_id)
    sent = Sent(request_id, "", "GET", "/healthz", "/healthz", OTHER, "", 200, None)
    check_line(line, sent)
    assert line["batch_size"] is None


def test_the_access_log_has_the_clients_pause_before_each_request(
    server: Server, access_log: AccessLog
) -> None:
    """On one kept-alive connection: none before its first request, then the time from the
    previous answer to the request. The server's pause spans the client's (its answer was
    complete before the client read it, the next request arrived after it was sent), and lies
    within what the client saw from sending the one request to reading the next answer."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids, sent, read = [], [], []
        for pause in (0.0, 0.3, 0.0):
            time.sleep(pause)
            sent.append(time.perf_counter())
            response = client.get("/healthz")
            read.append(time.perf_counter())
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
    first, slow, quick = (access_log.line(request_id)["client_pause_ms"] for request_id in ids)
    assert first is None
    assert slow >= (sent[1] - read[0]) * 1000 >= 300, slow
    assert 0 <= quick <= (read[2] - sent[1]) * 1000, quick


def test_a_pipelined_request_has_no_pause(server: Server, access_log: AccessLog) -> None:
    """Sent before the request ahead of it on the connection was answered: a pause of 0."""
    ids = [f"pipelined-{uuid.uuid4().hex}" for _ in range(2)]
    both = b"".join(
        f"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Request-ID: {request_id}\r\n\r\n".encode()
        for request_id in ids
    )
    with connect(server.url) as conn:
        conn.sendall(both)  # one segment: the second is read before the first is answered
        buffer = bytearray()
        for _ in ids:
            assert read_response(conn, buffer).startswith(b"HTTP/1.1 200")
    first, second = (access_log.line(request_id)["client_pause_ms"] for request_id in ids)
    assert (first, second) == (None, 0.0)


def test_a_request_without_an_id_gets_a_new_one(server: Server, access_log: AccessLog) -> None:
    ids = []
    for path, status in (("/healthz", 200), ("/healthz", 200), ("/no/route", 404)):
        response = httpx.get(f"{server.url}{path}", timeout=30)
        assert response.status_code == status
        (request_id,) = response.headers.get_list("x-request-id")
        assert REQUEST_ID.fullmatch(request_id), request_id
        assert access_log.line(request_id)["path"] == path
        ids.append(request_id)
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize(
    "insane",
    [
        "has spaces",
        "tab\there",
        "x" * 129,
        "x" * 500,
        'quote"d',
        "semi;colon",
        "<script>alert(1)</script>",
        b"caf\xc3\xa9",
    ],
    ids=["spaces", "tab", "129-chars", "500-chars", "quote", "semicolon", "markup", "non-ascii"],
)
def test_an_insane_request_id_is_replaced(
    server: Server, access_log: AccessLog, insane: str | bytes
) -> None:
    headers = {b"X-Request-ID": insane} if isinstance(insane, bytes) else {"X-Request-ID": insane}
    response = httpx.post(
        f"{server.url}/v1/models/plus:predict",
        json={"instances": [2.0]},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (request_id,) = response.headers.get_list("x-request-id")
    assert REQUEST_ID.fullmatch(request_id), request_id
    line = access_log.line(request_id)
    sent = Sent(
        request_id, "", "POST", "/v1/models/plus:predict", PREDICT, TFSERVING, "plus", 200, 1
    )
    check_line(line, sent)
    assert line["batch_size"] == 1
    text = insane if isinstance(insane, str) else insane.decode("latin-1")
    assert not [entry for entry in access_log.entries() if entry.get("request_id") == text]
