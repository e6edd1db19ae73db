"""The CPUs a container may use, from cgroup files written by the test (v2 and v1 layouts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.core.cpu_limit import available_cpus, cgroup_cpu_limit


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    for relative, text in files.items():
        write(tmp_path, relative, text)
    assert cgroup_cpu_limit(tmp_path) == limit


def test_available_cpus_is_the_smallest_of_limit_affinity_and_machine(tmp_path: Path) -> None:
    machine = min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))
    assert available_cpus(tmp_path) == machine  # no cgroup files: no limit
    write(tmp_path, "cpu.max", "50000 100000\n")
    assert available_cpus(tmp_path) == 1  # half a CPU still needs one thread
    write(tmp_path, "cpu.max", f"{(machine + 8) * 100000} 100000\n")
    assert available_cpus(tmp_path) == machine  # a limit above the machine changes nothing
