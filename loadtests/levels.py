"""The user-count levels of a run (medians over each level's settled history rows) and the
knee: the fewest users that reach nearly the peak throughput."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loadtests.locust_csv import HistoryRow

KNEE_SHARE = 0.95  # of the peak throughput


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
