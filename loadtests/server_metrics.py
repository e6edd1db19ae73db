"""What the server counted during a load test, per model, from two `/metrics` snapshots.

The load test scrapes the server's Prometheus exposition at its start and stop
(`PREFIX_metrics_before.prom`, `PREFIX_metrics_after.prom`); `compare(before, after)` turns the
counter differences into one `ModelDelta` per model: requests by status class, batches and their
mean size, padding rows, batches by dispatch reason and rejections by reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "modelserve_requests_total"  # labels: model, protocol, route, code
BATCH_COUNT = "modelserve_batch_size_count"  # histogram of real rows per batch: model, version
BATCH_ROWS = "modelserve_batch_size_sum"
PADDING_ROWS = "modelserve_batch_padding_rows_total"  # model, version
BATCHES = "modelserve_batches_total"  # model, version, reason
REJECTED = "modelserve_requests_rejected_total"  # model, reason
# Only monotonic samples: a delta of a gauge would mean nothing.
COUNTED_SAMPLES = frozenset({REQUESTS, BATCH_COUNT, BATCH_ROWS, PADDING_ROWS, BATCHES, REJECTED})
# Set once per process (ProcessCollector, Linux): a different value means a restart even when
# every counter has grown past its old value again.
PROCESS_START = "process_start_time_seconds"
NO_MODEL = "(no model)"  # requests the server could not tie to a model: unknown names, probes

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]  # sample name, sorted label pairs
Snapshot = dict[SeriesKey, float]


@dataclass
class ModelDelta:
    """Counts of one model between the two snapshots (summed over versions)."""

    model: str
    requests_by_class: dict[str, float] = field(default_factory=dict)  # "2xx", "4xx", ...
    batches: float = 0.0
    batch_rows: float = 0.0  # real rows run in batches
    padding_rows: float = 0.0
    batches_by_reason: dict[str, float] = field(default_factory=dict)
    rejected_by_reason: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return sum(self.requests_by_class.values())

    @property
    def mean_batch_size(self) -> float | None:
        return self.batch_rows / self.batches if self.batches else None

    @property
    def padding_fraction(self) -> float | None:
        """Share of the rows computed that were padding (wasted compute)."""
        computed = self.batch_rows + self.padding_rows
        return self.padding_rows / computed if computed else None

    @property
    def is_idle(self) -> bool:
        counts = [self.requests, self.batches, self.padding_rows, *self.rejected_by_reason.values()]
        return not any(counts)


@dataclass(frozen=True)
class ServerDelta:
    """Every model's counts, and whether the server restarted between the snapshots."""

    models: list[ModelDelta]
    restarted: bool
    reset_series: list[str]  # counters that went down, as `name{label="value",...}`


def parse_exposition(text: str) -> Snapshot:
    """The counted samples of a Prometheus text exposition, plus the process start time."""
    wanted = COUNTED_SAMPLES | {PROCESS_START}
    snapshot: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                snapshot[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return snapshot


def load_snapshot(path: Path) -> Snapshot:
    return parse_exposition(path.read_text(encoding="utf-8"))


def series_name(key: SeriesKey) -> str:
    name, labels = key
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def process_restarted(before: Snapshot, after: Snapshot) -> bool:
    key: SeriesKey = (PROCESS_START, ())
    return key in before and key in after and before[key] != after[key]


def counter_deltas(before: Snapshot, after: Snapshot) -> tuple[Snapshot, list[SeriesKey]]:
    """After minus before for every counted series (missing before: 0), and the series that
    went down. A counter that went down restarted from 0, so its count since then is its value
    after: a lower bound of the run's count, never a negative number."""
    restarted = process_restarted(before, after)
    deltas: Snapshot = {}
    resets: list[SeriesKey] = []
    for key, value in after.items():
        if key[0] not in COUNTED_SAMPLES:
            continue
        previous = 0.0 if restarted else before.get(key, 0.0)
        if value < previous:
            resets.append(key)
            previous = 0.0
        deltas[key] = value - previous
    return deltas, resets


def status_class(code: str) -> str:
    """The status class: "2xx" for "200"; the code itself when it is not a number."""
    return f"{code[0]}xx" if code.isdigit() and len(code) == 3 else code


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


def _samples(deltas: Snapshot, name: str) -> Iterable[tuple[dict[str, str], float]]:
    for (sample_name, labels), value in deltas.items():
        if sample_name == name:
            yield dict(labels), value


def model_deltas(deltas: Snapshot) -> list[ModelDelta]:
    """The counter deltas gathered per model label; the unlabelled ones under NO_MODEL, last."""
    totals: dict[str, ModelDelta] = {}

    def of(labels: Mapping[str, str]) -> ModelDelta:
        model = labels.get("model") or NO_MODEL
        return totals.setdefault(model, ModelDelta(model))

    for labels, value in _samples(deltas, REQUESTS):
        _add(of(labels).requests_by_class, status_class(labels.get("code", "")), value)
    for labels, value in _samples(deltas, BATCH_COUNT):
        of(labels).batches += value
    for labels, value in _samples(deltas, BATCH_ROWS):
        of(labels).batch_rows += value
    for labels, value in _samples(deltas, PADDING_ROWS):
        of(labels).padding_rows += value
    for labels, value in _samples(deltas, BATCHES):
        _add(of(labels).batches_by_reason, labels.get("reason", ""), value)
    for labels, value in _samples(deltas, REJECTED):
        _add(of(labels).rejected_by_reason, labels.get("reason", ""), value)
    return sorted(totals.values(), key=lambda m: (m.model == NO_MODEL, m.model))


def compare(before: Snapshot, after: Snapshot) -> ServerDelta:
    """Per-model counts between two snapshots; models with nothing counted are left out."""
    deltas, resets = counter_deltas(before, after)
    return ServerDelta(
        models=[m for m in model_deltas(deltas) if not m.is_idle],
        restarted=bool(resets) or process_restarted(before, after),
        reset_series=[series_name(key) for key in resets],
    )


def compare_files(before: Path, after: Path) -> ServerDelta | None:
    """`compare` of two exposition files; None when either is missing."""
    if not (before.is_file() and after.is_file()):
        return None
    return compare(load_snapshot(before), load_snapshot(after))
