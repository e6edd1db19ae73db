"""Reading what `locust --headless --csv PREFIX --csv-full-history` wrote (history, totals and
failures CSVs) and the locustfile's PREFIX_run.json."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AGGREGATED = "Aggregated"


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
