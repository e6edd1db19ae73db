"""The markdown summary of a run: number formatting, the knee line, one function per section
and `build_summary`, which puts them together."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from loadtests.levels import KNEE_SHARE, Level, find_knee
from loadtests.locust_csv import (
    Failure,
    HistoryRow,
    RequestTotals,
    input_path,
    read_failures,
    read_run_info,
    read_totals,
)
from loadtests.server_metrics import ModelDelta, ServerDelta, compare_files

TOP_FAILURES = 10
MISSING = "—"


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


def plots_section(summary: Path, over_time: Path, vs_users: Path) -> list[str]:
    """Links to the plots, relative to the summary's directory."""
    relative = [path.relative_to(summary.parent) for path in (over_time, vs_users)]
    return [
        "## Plots",
        "",
        f"![Throughput and latency over time]({relative[0].as_posix()})",
        "",
        f"![Throughput and latency per user level]({relative[1].as_posix()})",
    ]


def build_summary(
    prefix: Path,
    title: str,
    settle: float,
    history: Sequence[HistoryRow],
    levels: Sequence[Level],
    *,
    summary: Path,
    over_time: Path,
    vs_users: Path,
) -> str:
    """The markdown of the summary written to `summary`, linking the plots; the inputs it reads
    besides the history are optional."""
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
        plots_section(summary, over_time, vs_users),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"
