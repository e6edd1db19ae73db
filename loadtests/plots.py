"""The two PNG plots of a run: throughput, failures, users and latency over time; throughput
and latency per user level with the knee marked."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtests.levels import Level
from loadtests.locust_csv import HistoryRow
from loadtests.summary_md import fmt


def new_figure(rows: int) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(10, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)  # Agg renders the PNG; no pyplot state
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, list(axes)


def or_nan(value: float | None) -> float:
    """None as NaN, which matplotlib leaves as a gap in the line."""
    return math.nan if value is None else value


class Percentiles(Protocol):
    """Latencies of a history row or a level."""

    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...
    @property
    def p99(self) -> float | None: ...


PERCENTILES: tuple[tuple[str, Callable[[Percentiles], float | None]], ...] = (
    ("p50", lambda row: row.p50),
    ("p95", lambda row: row.p95),
    ("p99", lambda row: row.p99),
)


def shade_measured(axes: Axes, levels: Sequence[Level], origin: float) -> None:
    """The stretches the levels' medians come from, so the dropped settle time shows."""
    for index, level in enumerate(levels):
        label = "measured (after settle)" if index == 0 else None
        start, end = level.measured_from - origin, level.end - origin
        axes.axvspan(start, end, color="green", alpha=0.08, label=label)


def plot_over_time(
    rows: Sequence[HistoryRow], levels: Sequence[Level], path: Path, title: str
) -> None:
    figure, (throughput, latency) = new_figure(2)
    seconds = [row.timestamp - rows[0].timestamp for row in rows]
    for axes in (throughput, latency):
        shade_measured(axes, levels, rows[0].timestamp)
    throughput.plot(seconds, [row.rps for row in rows], label="req/s")
    throughput.plot(seconds, [row.failures_per_s for row in rows], label="failures/s", color="red")
    throughput.set_ylabel("per second")
    users = throughput.twinx()
    users.step(seconds, [row.users for row in rows], where="post", color="gray", label="users")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    lines, labels = throughput.get_legend_handles_labels()
    user_lines, user_labels = users.get_legend_handles_labels()
    throughput.legend(lines + user_lines, labels + user_labels, loc="upper left")
    for label, value_of in PERCENTILES:
        latency.plot(seconds, [or_nan(value_of(row)) for row in rows], label=label)
    latency.set_ylabel("latency ms")
    latency.set_xlabel("seconds since start")
    latency.legend(loc="upper left")
    for axes in (throughput, latency):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{title}: over time")
    figure.savefig(path, dpi=100)


def mark_knee(throughput: Axes, latency: Axes, knee: Level, levels: Sequence[Level]) -> None:
    for axes in (throughput, latency):
        axes.axvline(knee.users, color="gray", linestyle="--")
    at_right_edge = knee.users == max(level.users for level in levels)
    throughput.annotate(
        f"knee: {knee.users:,} users\n{fmt(knee.rps)} req/s, p99 {fmt(knee.p99)} ms",
        xy=(knee.users, knee.rps),
        xytext=(-10 if at_right_edge else 10, -40),  # keep the text inside the axes
        textcoords="offset points",
        horizontalalignment="right" if at_right_edge else "left",
        arrowprops={"arrowstyle": "->"},
    )


def plot_vs_users(levels: Sequence[Level], knee: Level | None, path: Path, title: str) -> None:
    figure, (throughput, latency) = new_figure(2)
    users = [level.users for level in levels]
    throughput.plot(users, [level.rps for level in levels], marker="o", label="req/s")
    throughput.plot(
        users, [level.failures_per_s for level in levels], marker="x", color="red", label="fail/s"
    )
    throughput.set_ylabel("per second")
    throughput.legend(loc="upper left")
    for label, value_of in PERCENTILES:
        latency.plot(users, [or_nan(value_of(level)) for level in levels], marker="o", label=label)
    latency.set_ylabel("latency ms")
    latency.set_xlabel("users")
    latency.legend(loc="upper left")
    latency.set_xticks(sorted(set(users)))
    for axes in (throughput, latency):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    if knee is not None:
        mark_knee(throughput, latency, knee, levels)
    subtitle = "per user level" if knee is not None else "no knee (not a step ramp)"
    figure.suptitle(f"{title}: {subtitle}")
    figure.savefig(path, dpi=100)
