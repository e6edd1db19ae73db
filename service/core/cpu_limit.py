"""How many CPUs this process may really use: the container's CPU limit (cgroup quota), the
CPU affinity mask and the machine, whichever is smallest.

`os.cpu_count()` reports the node's cores; in a container limited to 2 CPUs on a 64-core node,
TensorFlow would start 64 intra-op threads per call and the kernel would throttle them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), or None
    when there is no limit or no cgroup file to read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs to size thread pools for (at least 1; a fractional limit rounds up)."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        counts.append(math.ceil(limit))
    return max(1, min(counts))
