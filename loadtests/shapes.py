"""Load shapes as schedules of stages: how many users, from when to when.

- soak:  `--users` for `--run-time` (or until stopped): steady load, for leaks and drift;
- step:  `--step-users` more users every `--step-seconds` up to `--max-users`: the knee, where
         throughput stops growing and latency starts to;
- spike: `--users`, then `--spike-users` for `--spike-seconds` from `--spike-at`, then
         `--users` again as long as before the spike: shedding and recovery.

Pure functions (tested in tests/test_loadtests.py); the Locust shape class in the locustfile
only looks up the stage of the current second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("soak", "step", "spike")


@dataclass(frozen=True)
class Stage:
    """`users` users (reached at `spawn_rate` users per second) until `until` seconds."""

    until: float
    users: int
    spawn_rate: float


def soak(users: int, seconds: float | None, spawn_rate: float) -> list[Stage]:
    """Steady `users` for `seconds` (None: until the run is stopped)."""
    return [Stage(math.inf if seconds is None else seconds, users, spawn_rate)]


def step_ramp(
    step_users: int, step_seconds: float, max_users: int, spawn_rate: float
) -> list[Stage]:
    """step_users, 2*step_users, ... up to max_users (the last step may be partial), each
    held for step_seconds."""
    if step_users < 1 or max_users < step_users or step_seconds <= 0:
        raise ValueError(
            "a step ramp needs --step-users >= 1, --max-users >= --step-users and "
            f"--step-seconds > 0 (got {step_users}, {max_users}, {step_seconds})"
        )
    levels = list(range(step_users, max_users + 1, step_users))
    if levels[-1] != max_users:
        levels.append(max_users)
    return [
        Stage((index + 1) * step_seconds, users, spawn_rate) for index, users in enumerate(levels)
    ]


def spike(
    users: int, spike_users: int, spike_at: float, spike_seconds: float, spawn_rate: float
) -> list[Stage]:
    """`users`, a spike to `spike_users` (spawned within a second), then `users` again for as
    long as before the spike, to show the recovery."""
    if spike_users <= users or spike_at <= 0 or spike_seconds <= 0:
        raise ValueError(
            "a spike needs --spike-users > --users and --spike-at, --spike-seconds > 0 "
            f"(got {spike_users} vs {users}, {spike_at}, {spike_seconds})"
        )
    spike_rate = max(spawn_rate, float(spike_users - users))
    end_of_spike = spike_at + spike_seconds
    return [
        Stage(spike_at, users, spawn_rate),
        Stage(end_of_spike, spike_users, spike_rate),
        Stage(end_of_spike + spike_at, users, spike_rate),
    ]


def stage_at(stages: list[Stage], seconds: float) -> Stage | None:
    """The stage running `seconds` after the start; None once the schedule is over."""
    return next((stage for stage in stages if seconds < stage.until), None)


def duration(stages: list[Stage]) -> float:
    return stages[-1].until if stages else 0.0
