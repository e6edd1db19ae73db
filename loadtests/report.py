"""Plots and a markdown summary of a headless Locust run.

Reads what `locust --headless --csv PREFIX --csv-full-history` wrote (PREFIX_stats_history.csv,
PREFIX_stats.csv, PREFIX_failures.csv) and, when present, the server's /metrics snapshots
(PREFIX_metrics_before.prom, PREFIX_metrics_after.prom) and the locustfile's PREFIX_run.json.
Writes, next to PREFIX unless --out says otherwise:

    <base>_over_time.png   throughput, failures, users and latency over the run
    <base>_vs_users.png    throughput and latency per user level, with the knee marked
    <base>_summary.md      run info, verdict, totals, levels, knee, failures, server metrics

Run from the repository root:

    python -m loadtests.report PREFIX [--out DIR] [--settle SECONDS] [--title TEXT]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# `python loadtests/report.py` puts loadtests/, not the repository root, on sys.path.
if importlib.util.find_spec("loadtests") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.server_metrics import ModelDelta, ServerDelta, compare_files

AGGREGATED = "Aggregated"
# Locust's history percentiles and req/s cover the last 10 s: that much of each level still
# mixes in the previous one.
DEFAULT_SETTLE_SECONDS = 10.0
KNEE_SHARE = 0.95  # of the peak throughput
TOP_FAILURES = 10
MISSING = "—"


class ReportInputError(Exception):
    """An input the report cannot do without is missing or empty."""


@dataclass(frozen=True)
class HistoryRow:
    """One Aggregated row of PREFIX_stats_history.csv; latencies in ms, None for N/A."""

    timestamp: float
    users: int
    rps: float
    failures_per_s: float
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Level:
    """A stretch of the run at one user count, summarised by medians over its settled rows."""

    users: int
    start: float  # unix time of the level's first row
    measured_from: float  # its first row after the settle time
    end: float  # the next level's first row, or the last row
    samples: int  # history rows left after the settle time
    rps: float
    failures_per_s: float
    p50: float | None
    p95: float | None
    p99: float | None

    @property
    def seconds(self) -> float:
        """Time spent at this user count, settle included."""
        return self.end - self.start


@dataclass(frozen=True)
class RequestTotals:
    """One row of PREFIX_stats.csv: totals of one request name, or the Aggregated row."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    max_ms: float | None

    @property
    def failure_share(self) -> float | None:
        return self.failures / self.requests if self.requests else None


@dataclass(frozen=True)
class Failure:
    method: str
    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class OutputPaths:
    over_time: Path
    vs_users: Path
    summary: Path


# --- reading -------------------------------------------------------------------------------


def input_path(prefix: Path, suffix: str) -> Path:
    """Locust's naming: `--csv out/run` writes out/run_stats.csv and so on."""
    return prefix.with_name(prefix.name + suffix)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def number(cell: str | None) -> float | None:
    """A CSV cell as a float; None for Locust's "N/A" and for empty cells."""
    if cell is None or cell.strip() in ("", "N/A"):
        return None
    return float(cell)


def number_or_zero(cell: str | None) -> float:
    value = number(cell)
    return 0.0 if value is None else value


def read_history(path: Path) -> list[HistoryRow]:
    """The Aggregated rows of the history CSV, in time order."""
    if not path.is_file():
        raise ReportInputError(f"missing {path} (run locust with --csv PREFIX --csv-full-history)")
    rows = [
        HistoryRow(
            timestamp=number_or_zero(row["Timestamp"]),
            users=int(number_or_zero(row["User Count"])),
            rps=number_or_zero(row["Requests/s"]),
            failures_per_s=number_or_zero(row["Failures/s"]),
            p50=number(row["50%"]),
            p95=number(row["95%"]),
            p99=number(row["99%"]),
        )
        for row in read_csv(path)
        if row.get("Name") == AGGREGATED
    ]
    if not rows:
        raise ReportInputError(f"no {AGGREGATED} rows in {path}")
    return sorted(rows, key=lambda row: row.timestamp)


def read_totals(path: Path) -> list[RequestTotals] | None:
    """The rows of PREFIX_stats.csv, Aggregated last as Locust writes it; None without the file."""
    if not path.is_file():
        return None
    return [
        RequestTotals(
            method=row.get("Type", ""),
            name=row.get("Name", ""),
            requests=int(number_or_zero(row.get("Request Count"))),
            failures=int(number_or_zero(row.get("Failure Count"))),
            rps=number_or_zero(row.get("Requests/s")),
            p50=number(row.get("50%")),
            p95=number(row.get("95%")),
            p99=number(row.get("99%")),
            max_ms=number(row.get("Max Response Time")),
        )
        for row in read_csv(path)
    ]


def read_failures(path: Path) -> list[Failure] | None:
    """PREFIX_failures.csv, most frequent first; None without the file."""
    if not path.is_file():
        return None
    failures = [
        Failure(
            method=row.get("Method", ""),
            name=row.get("Name", ""),
            error=row.get("Error", ""),
            occurrences=int(number_or_zero(row.get("Occurrences"))),
        )
        for row in read_csv(path)
    ]
    return sorted(failures, key=lambda failure: failure.occurrences, reverse=True)


def read_run_info(path: Path) -> dict[str, Any]:
    """The locustfile's PREFIX_run.json; empty when missing or not a JSON object."""
    if not path.is_file():
        return {}
    info = json.loads(path.read_text(encoding="utf-8"))
    return info if isinstance(info, dict) else {}


# --- levels and knee -----------------------------------------------------------------------


def split_by_users(rows: Sequence[HistoryRow]) -> list[list[HistoryRow]]:
    """Consecutive rows with the same user count; a count that comes back starts a new run."""
    runs: list[list[HistoryRow]] = []
    for row in rows:
        if runs and runs[-1][-1].users == row.users:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def median_of(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise_level(run: Sequence[HistoryRow], end: float, settle: float) -> Level | None:
    """The medians of a run's rows after its first `settle` seconds; None when none are left.
    `end` is when the next run started (or the last row's time)."""
    start = run[0].timestamp
    settled = [row for row in run if row.timestamp >= start + settle]
    if not settled:
        return None
    return Level(
        users=run[0].users,
        start=start,
        measured_from=settled[0].timestamp,
        end=end,
        samples=len(settled),
        rps=statistics.median(row.rps for row in settled),
        failures_per_s=statistics.median(row.failures_per_s for row in settled),
        p50=median_of(row.p50 for row in settled),
        p95=median_of(row.p95 for row in settled),
        p99=median_of(row.p99 for row in settled),
    )


def find_levels(rows: Sequence[HistoryRow], settle: float) -> list[Level]:
    """One Level per run of equal user counts that outlasted the settle time; runs at 0 users
    (before the first spawn, after the last stop) measure nothing and are left out."""
    runs = split_by_users(rows)
    ends = [later[0].timestamp for later in runs[1:]] + [runs[-1][-1].timestamp]
    levels = [summarise_level(run, end, settle) for run, end in zip(runs, ends, strict=True)]
    return [level for level in levels if level is not None and level.users > 0]


def find_knee(levels: Sequence[Level]) -> Level | None:
    """The fewest users that reach KNEE_SHARE of the peak throughput: past it, more users add
    latency, not throughput. None with fewer than two levels (not a step ramp)."""
    if len(levels) < 2:
        return None
    peak = max(level.rps for level in levels)
    reaching = [level for level in levels if level.rps >= KNEE_SHARE * peak]
    return min(reaching, key=lambda level: level.users)


def knee_line(levels: Sequence[Level], knee: Level | None) -> str:
    if not levels:
        return "No knee: no user level outlasted the settle time (a smaller --settle keeps more)."
    if knee is None:
        return "No knee: the run has a single user level (not a step ramp)."
    peak = max(levels, key=lambda level: level.rps)
    knee_text = f"Knee: {knee.users:,} users, {fmt(knee.rps)} req/s, p99 {fmt(knee.p99)} ms"
    if knee.users == max(level.users for level in levels):
        return f"{knee_text}, the most users tested: throughput had not levelled off yet."
    return (
        f"{knee_text} (≥ {KNEE_SHARE:.0%} of the peak {fmt(peak.rps)} req/s at "
        f"{peak.users:,} users); beyond it users add latency, not throughput."
    )


# --- formatting ----------------------------------------------------------------------------


def fmt(value: float | None, decimals: int = 1) -> str:
    """Thousands separators; whole numbers without decimals; MISSING for None."""
    if value is None or math.isnan(value):
        return MISSING
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{decimals}f}"


def fmt_share(share: float | None) -> str:
    return MISSING if share is None else f"{share:.1%}"


def cell(value: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def fmt_counts(counts: dict[str, float]) -> str:
    """`queue_full 3, deadline 1` without the zeros; MISSING when all are zero."""
    present = [f"{key} {fmt(value)}" for key, value in sorted(counts.items()) if value]
    return ", ".join(present) or MISSING


def fmt_info_value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or MISSING
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or MISSING
    return MISSING if value is None or value == "" else str(value)


# --- summary sections ----------------------------------------------------------------------

RUN_INFO_LABELS = {
    "host": "Host",
    "shape": "Shape",
    "shape_parameters": "Shape parameters",
    "user_classes": "User classes",
    "tags": "Tags",
    "exclude_tags": "Excluded tags",
    "started": "Started",
    "stopped": "Stopped",
}
RUN_INFO_OWN_SECTIONS = ("thresholds", "verdict")


def run_info_section(info: dict[str, Any], history: Sequence[HistoryRow]) -> list[str]:
    """Known run.json keys first, then any others; the history's span always."""
    keys = [key for key in RUN_INFO_LABELS if key in info]
    keys += [key for key in info if key not in RUN_INFO_LABELS and key not in RUN_INFO_OWN_SECTIONS]
    rows = [(RUN_INFO_LABELS.get(key, key), fmt_info_value(info[key])) for key in keys]
    span = history[-1].timestamp - history[0].timestamp
    rows.append(("History", f"{len(history):,} rows over {fmt(span)} s"))
    return ["## Run", "", *table(("", ""), rows)]


def verdict_section(info: dict[str, Any]) -> list[str]:
    verdict = info.get("verdict")
    thresholds = info.get("thresholds")
    if not isinstance(verdict, dict) and not isinstance(thresholds, dict):
        return []
    lines = ["## Verdict", ""]
    if isinstance(verdict, dict):
        passed = verdict.get("passed")
        lines.append(f"**{'PASSED' if passed else 'FAILED'}**" if passed is not None else MISSING)
        lines += [f"- {reason}" for reason in verdict.get("reasons") or []]
        lines.append("")
    if isinstance(thresholds, dict):
        lines += table(("Threshold", "Value"), thresholds.items())
    return lines


TOTALS_HEADER = (
    "Type",
    "Name",
    "Requests",
    "Failures",
    "Fail %",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
)


def totals_row(totals: RequestTotals) -> list[str]:
    return [
        totals.method,
        totals.name,
        fmt(totals.requests),
        fmt(totals.failures),
        fmt_share(totals.failure_share),
        fmt(totals.rps),
        fmt(totals.p50),
        fmt(totals.p95),
        fmt(totals.p99),
        fmt(totals.max_ms),
    ]


def totals_section(totals: list[RequestTotals] | None, path: Path) -> list[str]:
    lines = ["## Totals", ""]
    if totals is None:
        return [*lines, f"Missing {path.name}."]
    return [*lines, *table(TOTALS_HEADER, [totals_row(row) for row in totals])]


LEVELS_HEADER = (
    "Users",
    "Duration s",
    "Samples",
    "req/s",
    "failures/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
)


def level_row(level: Level) -> list[str]:
    return [
        fmt(level.users),
        fmt(level.seconds),
        fmt(level.samples),
        fmt(level.rps),
        fmt(level.failures_per_s),
        fmt(level.p50),
        fmt(level.p95),
        fmt(level.p99),
    ]


def levels_section(levels: Sequence[Level], knee: Level | None, settle: float) -> list[str]:
    lines = [
        "## User levels",
        "",
        f"Medians over each level after its first {fmt(settle)} s (Locust's history covers the "
        "last 10 s, so earlier rows mix in the previous level).",
        "",
    ]
    if levels:
        lines += [*table(LEVELS_HEADER, [level_row(level) for level in levels]), ""]
    return [*lines, f"**{knee_line(levels, knee)}**"]


def failures_section(failures: list[Failure] | None, path: Path) -> list[str]:
    lines = ["## Failures", ""]
    if failures is None:
        return [*lines, f"Missing {path.name}."]
    if not failures:
        return [*lines, "None."]
    rows = [(fmt(f.occurrences), f.method, f.name, f.error) for f in failures[:TOP_FAILURES]]
    lines += table(("Occurrences", "Method", "Name", "Error"), rows)
    if len(failures) > TOP_FAILURES:
        lines += ["", f"{len(failures) - TOP_FAILURES:,} more kinds in {path.name}."]
    return lines


STATUS_CLASSES = ("2xx", "4xx", "5xx")
SERVER_HEADER = (
    "Model",
    *STATUS_CLASSES,
    "Batches",
    "Mean batch size",
    "Padding %",
    "Batches by reason",
    "Rejected by reason",
)


def model_row(model: ModelDelta) -> list[str]:
    return [
        model.model,
        *(fmt(model.requests_by_class.get(status, 0.0)) for status in STATUS_CLASSES),
        fmt(model.batches),
        fmt(model.mean_batch_size, 2),
        fmt_share(model.padding_fraction),
        fmt_counts(model.batches_by_reason),
        fmt_counts(model.rejected_by_reason),
    ]


def restart_note(delta: ServerDelta) -> list[str]:
    if not delta.restarted:
        return []
    went_down = ", ".join(f"`{name}`" for name in delta.reset_series) or MISSING
    return [
        "**The server restarted between the snapshots**: counts are since the restart "
        f"(lower bounds). Counters that went down: {went_down}",
        "",
    ]


def server_section(delta: ServerDelta | None, before: Path, after: Path) -> list[str]:
    lines = ["## Server metrics", ""]
    if delta is None:
        return [*lines, f"Missing {before.name} or {after.name}: no server-side counts."]
    lines += restart_note(delta)
    if not delta.models:
        return [*lines, "No requests counted."]
    lines += table(SERVER_HEADER, [model_row(model) for model in delta.models])
    return [*lines, "", "Padding %: padding rows over all rows run. Idle models are left out."]


def plots_section(paths: OutputPaths) -> list[str]:
    relative = [
        path.relative_to(paths.summary.parent) for path in (paths.over_time, paths.vs_users)
    ]
    return [
        "## Plots",
        "",
        f"![Throughput and latency over time]({relative[0].as_posix()})",
        "",
        f"![Throughput and latency per user level]({relative[1].as_posix()})",
    ]


# --- plots ---------------------------------------------------------------------------------


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


# --- the report ----------------------------------------------------------------------------


def output_paths(prefix: Path, out: Path | None) -> OutputPaths:
    directory = prefix.parent if out is None else out
    return OutputPaths(
        over_time=directory / f"{prefix.name}_over_time.png",
        vs_users=directory / f"{prefix.name}_vs_users.png",
        summary=directory / f"{prefix.name}_summary.md",
    )


def build_summary(
    prefix: Path,
    title: str,
    settle: float,
    history: Sequence[HistoryRow],
    levels: Sequence[Level],
    paths: OutputPaths,
) -> str:
    """The summary's markdown; the other inputs it reads are optional."""
    info = read_run_info(input_path(prefix, "_run.json"))
    knee = find_knee(levels)
    stats_path = input_path(prefix, "_stats.csv")
    failures_path = input_path(prefix, "_failures.csv")
    before = input_path(prefix, "_metrics_before.prom")
    after = input_path(prefix, "_metrics_after.prom")
    sections = [
        [f"# {title}"],
        run_info_section(info, history),
        verdict_section(info),
        totals_section(read_totals(stats_path), stats_path),
        levels_section(levels, knee, settle),
        failures_section(read_failures(failures_path), failures_path),
        server_section(compare_files(before, after), before, after),
        plots_section(paths),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_report(prefix: Path, out: Path | None, settle: float, title: str | None) -> str:
    """Writes the plots and the summary; returns the knee line."""
    history = read_history(input_path(prefix, "_stats_history.csv"))
    paths = output_paths(prefix, out)
    paths.summary.parent.mkdir(parents=True, exist_ok=True)
    title = title or f"Load test report: {prefix.name}"
    levels = find_levels(history, settle)
    knee = find_knee(levels)
    plot_over_time(history, levels, paths.over_time, title)
    plot_vs_users(levels, knee, paths.vs_users, title)
    summary = build_summary(prefix, title, settle, history, levels, paths)
    paths.summary.write_text(summary, encoding="utf-8")
    return knee_line(levels, knee)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.report",
        description="Plots and a markdown summary of a headless Locust run (--csv PREFIX "
        "--csv-full-history).",
    )
    parser.add_argument("prefix", type=Path, help="the PREFIX given to locust --csv")
    parser.add_argument("--out", type=Path, help="output directory (default: PREFIX's)")
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        help="seconds dropped at the start of each user level (default: %(default)s)",
    )
    parser.add_argument("--title", help="title of the plots and the summary")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        knee = write_report(args.prefix, args.out, args.settle, args.title)
    except ReportInputError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    print(output_paths(args.prefix, args.out).summary)
    print(knee)
    return 0


if __name__ == "__main__":
    sys.exit(main())
