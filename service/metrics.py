"""Prometheus metrics, one registry per app: events are counted as they happen, state is read
from the model repository at scrape time. Labels are bounded (known models, served versions,
route templates, status codes)."""

from __future__ import annotations

import collections
import importlib.metadata
import os
import platform
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from service import __version__
from service.core.batching import Batcher, BatchObserver, BatchStats
from service.core.servable import VersionState
from service.errors import InvalidInputError, ModelFailureError
from service.http.limits import REFUSAL_REASONS as HTTP_REFUSAL_REASONS
from service.protos import tensorflow_runtime_loaded

if TYPE_CHECKING:
    from service.core.repository import ModelRepository, ModelView
    from service.tasks.image_decoding import ImageDecoder

# Seconds: sub-millisecond (votes) to the tens of seconds of a large ResNet50 batch.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
REJECTION_BY_STATUS = {429: "queue_full", 504: "deadline", 499: "client_gone"}
REJECTION_REASONS = (*REJECTION_BY_STATUS.values(), "invalid")
INVALID_STATUSES = frozenset({400, 413, 415, 422})
ERROR_CODES = (InvalidInputError.code, ModelFailureError.code)
"""Codes of model errors exported from the start; others appear once seen."""


def rejection_reason(status: int) -> str | None:
    """Why a request was refused, from its status: queue_full, deadline, client_gone, invalid."""
    if status in INVALID_STATUSES:
        return "invalid"
    return REJECTION_BY_STATUS.get(status)


class Metrics:
    """Every metric of one app, in its own registry (tests build as many apps as they like)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        requests: bool = True,
        models: bool = True,
    ) -> None:
        """`requests`: the request counters (a front-end worker's part; with
        PROMETHEUS_MULTIPROC_DIR set they are shared files, summed over the workers at a
        scrape); `models`: the models' and the process's (the model process's part)."""
        self.registry = registry or CollectorRegistry()
        # collectors read at a scrape, apart from the shared files in a worker
        self._live = CollectorRegistry() if multiprocess_directory() else self.registry
        r = self.registry if requests else CollectorRegistry()  # not exposed: unused
        counter = partial(Counter, registry=r)
        histogram = partial(Histogram, buckets=LATENCY_BUCKETS, registry=r)
        self.requests = counter(
            "modelserve_requests",
            "Requests answered, by model, protocol, route template and status code.",
            ["model", "protocol", "route", "code"],
        )
        self.request_seconds = histogram(
            "modelserve_request_duration_seconds",
            "End-to-end request latency, from the first byte read to the last byte written.",
            ["model", "protocol", "route"],
        )
        # each label set's children, looked up once: labels() validates and locks on every call
        # (series are never removed, so a child found here stays the one exposed)
        self._request_series: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self.rejected = counter(
            "modelserve_requests_rejected",
            "Requests refused: queue_full (429), deadline (504), client_gone (499), invalid (4xx).",
            ["model", "reason"],
        )
        self.http_refused = counter(
            "modelserve_http_refused",
            "HTTP connections refused or closed before their request reached the app "
            "(service.http.limits): headers_too_large, too_many_headers (431), header_timeout "
            "(408), idle_timeout, body_timeout (closed), too_many_connections (503).",
            ["reason"],
        )
        for reason in HTTP_REFUSAL_REASONS:  # at 0, so rate() sees the first one
            self.http_refused.labels(reason)
        self.grpc_refused = counter(
            "modelserve_grpc_refused",
            "gRPC calls refused before reaching a servicer: concurrency "
            "(RESOURCE_EXHAUSTED beyond grpc_max_concurrent_rpcs).",
            ["reason"],
        )
        self.grpc_refused.labels("concurrency")
        r = self.registry if models else CollectorRegistry()
        histogram = partial(Histogram, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait_seconds = histogram(
            "modelserve_queue_wait_seconds",
            "Time a request waited in its model's batch queue before its batch ran.",
            ["model", "version"],
        )
        self.batch_seconds = histogram(
            "modelserve_batch_duration_seconds",
            "Model execution time of one batch.",
            ["model", "version"],
        )
        if models:  # in a worker, a gauge set here would be a shared file, once per worker
            build = Gauge(
                "modelserve_build_info",
                "Versions of modelserve, TensorFlow and Python (always 1).",
                ["version", "tensorflow", "python"],
                registry=r,
            )
            build.labels(__version__, tensorflow_version(), platform.python_version()).set(1)
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self._repository_collector: _RepositoryCollector | None = None
        self._gpu_collector: _GPUMemoryCollector | None = None
        self._decoder_collector: _ImageDecoderCollector | None = None

    def watch(self, repository: ModelRepository) -> None:
        """Exports the repository's state (models, versions, batchers) at every scrape."""
        if self._repository_collector is not None:
            self.registry.unregister(self._repository_collector)
        self._repository_collector = _RepositoryCollector(repository)
        self.registry.register(self._repository_collector)
        self.count_rejections(repository.model_names())
        if self._gpu_collector is None:  # once: a second one would expose the family twice
            # registered here, not in __init__: it lists TensorFlow's devices, which must not
            # happen before the app has configured them
            self._gpu_collector = _GPUMemoryCollector()
            self.registry.register(self._gpu_collector)

    def count_request(
        self, model: str, protocol: str, route: str, code: str, seconds: float
    ) -> None:
        """One answered request in `requests` and `request_seconds`."""
        key = (model, protocol, route, code)
        series = self._request_series.get(key)
        if series is None:
            series = (self.requests.labels(*key), self.request_seconds.labels(*key[:3]))
            self._request_series[key] = series
        count, latency = series
        count.inc()
        latency.observe(seconds)

    def count_rejections(self, models: Iterable[str]) -> None:
        """At 0, so rate() sees the first rejection of each model."""
        for model in models:
            for reason in REJECTION_REASONS:
                self.rejected.labels(model, reason)

    def watch_image_decoder(self, decoder: ImageDecoder) -> None:
        """Exports the task API's image decodes in flight (and their pixels) at every scrape
        (in a worker: its own)."""
        if self._decoder_collector is not None:
            self._live.unregister(self._decoder_collector)
        self._decoder_collector = _ImageDecoderCollector(decoder)
        self._live.register(self._decoder_collector)

    def batch_observer(self, model: str, version: int) -> BatchObserver:
        return _VersionObserver(
            self.queue_wait_seconds.labels(model, str(version)),
            self.batch_seconds.labels(model, str(version)),
        )

    def exposition(self) -> bytes:
        """This process's metrics; in a worker, every worker's request metrics summed."""
        directory = multiprocess_directory()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged) + generate_latest(self._live)


def multiprocess_directory() -> str | None:
    """Where the workers' request metrics live (set by `service.processes.supervisor`)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


@dataclass(frozen=True)
class _VersionObserver:
    queue_wait: Histogram
    batch: Histogram

    def dispatched(self, queue_waits: Sequence[float]) -> None:
        for seconds in queue_waits:
            self.queue_wait.observe(seconds)

    def ran(self, seconds: float) -> None:
        self.batch.observe(seconds)


class _RepositoryCollector(Collector):
    """Model, version and batcher state, read when Prometheus scrapes."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for view in self._repository.models():
            families.add(view)
        yield from vars(families).values()


class _Families:
    """One scrape's families; every attribute is one, in the order they are exposed."""

    def __init__(self) -> None:
        mv = ["model", "version"]
        gauge = partial(GaugeMetricFamily, labels=mv)
        counter = partial(CounterMetricFamily, labels=mv)
        self.ready = gauge(
            "modelserve_model_ready", "1 when the model has an AVAILABLE version.", labels=["model"]
        )
        self.available = gauge(
            "modelserve_model_version_available",
            "1 for each AVAILABLE version, 0 for versions loading, failed or unloading.",
        )
        self.load_seconds = gauge(
            "modelserve_model_load_seconds", "Time to load a version and warm it up, in seconds."
        )
        self.load_failures = counter(
            "modelserve_model_load_failures",
            "Versions that failed to load since the server started.",
            labels=["model"],
        )
        self.instances = gauge(
            "modelserve_instance_info",
            "Where each model instance runs (always 1).",
            # not `instance`: Prometheus sets that label to the scraped target
            labels=[*mv, "model_instance", "device"],
        )
        self.saturation = gauge(
            "modelserve_saturation",
            "Rows queued or running over the rows the instances take at once (one full batch "
            "each); above 1 the queue grows. The autoscaling signal.",
            labels=["model"],
        )
        self.batches = counter(
            "modelserve_batches",
            "Batches run, by dispatch reason: idle (an instance was free), full "
            "(max_batch_size), delay (max_batch_delay_ms ran out), refill (held for the "
            "clients just answered), deadline (a queued request's deadline cut a hold short).",
            labels=[*mv, "reason"],
        )
        self.rows = counter("modelserve_batch_rows", "Real rows (instances) run in batches.")
        self.padding = counter(
            "modelserve_batch_padding_rows",
            "Rows added to reach an allowed batch size (wasted compute).",
        )
        self.sizes = HistogramMetricFamily(
            "modelserve_batch_size",
            "Real rows per batch; buckets at the model's allowed batch sizes.",
            labels=mv,
        )
        self.queue_depth = gauge("modelserve_queue_depth", "Requests waiting in the batch queue.")
        self.in_flight = gauge("modelserve_batches_in_flight", "Batches running on the model now.")
        self.splits = counter(
            "modelserve_batch_splits",
            "Failed batches (or halves of one) retried as two halves, so that only the requests "
            "failing on their own get the error.",
        )
        self.errors = counter(
            "modelserve_model_errors",
            "Model calls that raised, by canonical code: INVALID_ARGUMENT (the model rejected "
            "input values), INTERNAL (the model failed), others from a remote backend.",
            labels=[*mv, "code"],
        )

    def add(self, view: ModelView) -> None:
        self.ready.add_metric([view.name], 1.0 if view.ready else 0.0)
        self.load_failures.add_metric([view.name], view.load_failures)
        busiest = 0.0
        for servable in view.versions:
            labels = [view.name, str(servable.version)]
            is_available = servable.state is VersionState.AVAILABLE
            self.available.add_metric(labels, 1.0 if is_available else 0.0)
            if servable.load_seconds:
                self.load_seconds.add_metric(
                    labels, servable.load_seconds + servable.warmup_seconds
                )
            if not is_available:
                continue
            for index, device in enumerate(servable.devices()):
                self.instances.add_metric([*labels, str(index), device], 1.0)
            batchers = servable.batchers()
            self._add_batches(labels, batchers, servable.batches_in_flight())
            busiest = max(busiest, _saturation(batchers))
        self.saturation.add_metric([view.name], busiest)

    def _add_batches(self, labels: list[str], batchers: list[Batcher], in_flight: int) -> None:
        """The batch counters of a version, summed over its signatures."""
        stats = BatchStats.total(batcher.stats for batcher in batchers)
        for reason, count in sorted(stats.reasons.items()):
            self.batches.add_metric([*labels, reason], count)
        self.rows.add_metric(labels, stats.rows)
        self.padding.add_metric(labels, stats.padded_rows)
        self.queue_depth.add_metric(labels, sum(b.queued for b in batchers))
        self.in_flight.add_metric(labels, in_flight)
        self.splits.add_metric(labels, stats.splits)
        errors = collections.Counter(dict.fromkeys(ERROR_CODES, 0))  # at 0: rate() sees the first
        errors.update(stats.model_errors)
        for code, count in sorted(errors.items()):
            self.errors.add_metric([*labels, code], count)
        if batchers:
            self.sizes.add_metric(labels, *_size_buckets(batchers))


def _size_buckets(batchers: list[Batcher]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative counts at the allowed sizes (+Inf last) and the sum of rows."""
    sizes = sorted({size for b in batchers for size in (b.sizes or (1,))})
    counts: collections.Counter[int] = collections.Counter()
    for batcher in batchers:
        counts.update(batcher.stats.rows_per_batch)
    buckets = [
        (str(float(size)), float(sum(c for rows, c in counts.items() if rows <= size)))
        for size in sizes
    ]
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets, float(sum(rows * count for rows, count in counts.items()))


def _saturation(batchers: list[Batcher]) -> float:
    work = sum(b.queued_rows + b.held_rows + b.running_rows for b in batchers)
    capacity = max((b.capacity_rows for b in batchers), default=0)
    return work / capacity if capacity else 0.0


class _ImageDecoderCollector(Collector):
    def __init__(self, decoder: ImageDecoder) -> None:
        self._decoder = decoder

    def collect(self) -> Iterator[Metric]:
        decoder = self._decoder
        yield GaugeMetricFamily(
            "modelserve_image_decodes_in_flight",
            "Uploaded images being decoded now (at most image_decode_threads).",
            value=decoder.running,
        )
        yield GaugeMetricFamily(
            "modelserve_image_decode_pixels_in_flight",
            "Pixels of uploaded images admitted to decoding (at most max_decode_pixels).",
            value=decoder.budget.in_use,
        )


@cache
def tensorflow_version() -> str:
    """The installed TensorFlow distribution's version ("" if none), read without importing
    TensorFlow: front-end workers have only its protobuf modules (`service.protos`)."""
    for distribution in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


class _GPUMemoryCollector(Collector):
    """Memory TensorFlow holds per GPU (tf.config.experimental.get_memory_info); nothing on
    machines without GPUs, nor in a process without TensorFlow's runtime (a front-end worker)."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelserve_gpu_memory_bytes",
            "GPU memory TensorFlow holds: current and peak, per device.",
            labels=["device", "kind"],
        )
        if tensorflow_runtime_loaded():  # never imports it: only the model process has it
            import tensorflow as tf

            for device in tf.config.list_logical_devices("GPU"):
                info = tf.config.experimental.get_memory_info(device.name)
                family.add_metric([device.name, "current"], info["current"])
                family.add_metric([device.name, "peak"], info["peak"])
        yield family
