"""Where the machine's idle CPU time goes under load: which process ran on the other CPUs while
a CPU sat idle. A server that forms batches runs in phases (the model call, then the front ends
answering and reading the next requests); the CPU left idle between them is what it gives up.

Starts the server (`--workers N`, the shipped serving config), drives one model with `wrk`
(`--connections`, closed loop), records the scheduler with `perf sched record` for
`--seconds` in the middle of the run, and cuts the trace into 1 ms slices. In each slice a CPU's
idle time is charged to the role that ran longest on the other CPUs then: the model process's
event loop, its other threads (TensorFlow's and the inference threads), a worker, `wrk`, or
nothing (all idle); with `--workers 0`, the single process's event loop or other threads.
Prints req/s, the idle share and the table of charges.

Run from the repository root:  python benchmarks/idle_cpu.py [--model digits] [--workers 2]
Needs `wrk` and `perf` (Debian: apt install wrk linux-perf) with the right to trace the
scheduler (root, or kernel.perf_event_paranoid at most 1).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import serving

SLICE_US = 1000
# `perf sched timehist` lines: time, [cpu], task name [tid/pid], wait, delay, run time (ms)
EVENT = re.compile(r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s*$")
TASK_IDS = re.compile(r"\[(\d+)(?:/(\d+))?\]")
IDLE = "(idle)"


def roles_of(server: serving.Server) -> dict[int, str]:
    """Process id -> role, as `serving.ServerProcesses` tells them (with the workers numbered
    and the model's process, or the single process, named as printed)."""
    names = {"model": "model process", "server": "single process"}
    roles = {pid: role for pid, (role, _) in serving.ServerProcesses(server, True).roles().items()}
    workers = sorted(pid for pid, role in roles.items() if role == "worker")
    roles.update({pid: f"worker {number}" for number, pid in enumerate(workers)})
    return {pid: names.get(role, role) for pid, role in roles.items()}


def role_of(task: str, roles: dict[int, str]) -> str:
    if task.startswith("<idle>"):
        return IDLE
    if task.startswith("wrk"):
        return "wrk"
    ids = TASK_IDS.search(task)
    if ids is None:
        return "other"
    tid = int(ids.group(1))
    pid = int(ids.group(2) or tid)
    role = roles.get(pid, "other")
    if role in ("model process", "single process"):  # TensorFlow's and the inference threads
        return f"{role}: event loop" if tid == pid else f"{role}: other threads"
    return role


def slices(timehist: str, roles: dict[int, str]) -> dict[tuple[int, int], collections.Counter]:
    """(slice, cpu) -> µs each role ran in that slice on that CPU."""
    runs = []
    for line in timehist.splitlines():
        if match := EVENT.match(line):
            end, cpu, task, run_ms = match.groups()
            runs.append((float(end), int(cpu), role_of(task.strip(), roles), float(run_ms)))
    if not runs:
        sys.exit("perf recorded no scheduler events (is perf allowed to trace?)")
    origin = min(end - run_ms / 1000 for end, _, _, run_ms in runs)
    used: dict[tuple[int, int], collections.Counter] = collections.defaultdict(collections.Counter)
    for end, cpu, role, run_ms in runs:
        start_us = round((end - run_ms / 1000 - origin) * 1e6)
        end_us = round((end - origin) * 1e6)
        while start_us < end_us:
            number = start_us // SLICE_US
            stop = min(end_us, (number + 1) * SLICE_US)
            used[(number, cpu)][role] += stop - start_us
            start_us = stop
    return used


def charge_idle(used: dict[tuple[int, int], collections.Counter]) -> collections.Counter:
    """Idle µs of each CPU, charged to what ran longest on the other CPUs in the same slice."""
    cpus = sorted({cpu for _, cpu in used})
    charged: collections.Counter = collections.Counter()
    for number in sorted({n for n, _ in used}):
        for cpu in cpus:
            idle = used[(number, cpu)][IDLE]
            if idle <= 0:
                continue
            others: collections.Counter = collections.Counter()
            for other in cpus:
                if other != cpu:
                    others.update(used[(number, other)])
            del others[IDLE]
            busiest = others.most_common(1)
            charged[busiest[0][0] if busiest else "nothing (all idle)"] += idle
    return charged


def record(seconds: float, workdir: Path) -> str:
    data = workdir / "sched.data"
    subprocess.run(
        ["perf", "sched", "record", "-a", "-o", str(data), "--", "sleep", str(seconds)],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        ["perf", "sched", "timehist", "-i", str(data)], check=True, capture_output=True, text=True
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="of scheduler trace")
    args = parser.parse_args()
    for tool in ("wrk", "perf"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt install {'wrk' if tool == 'wrk' else 'linux-perf'}")

    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with serving.gateway_server(
            "batched", [args.model], workdir, workers=args.workers
        ) as server:
            body, headers = serving.v2_request(server.url, args.model)
            url = f"{server.url}/v2/models/{args.model}/infer"
            serving.drive(url, body, args.connections, 2, workdir, headers)  # warm-up
            roles = roles_of(server)
            result: dict[str, float] = {}
            load_seconds = args.seconds + 4
            load = threading.Thread(
                target=lambda: result.update(
                    serving.drive(url, body, args.connections, load_seconds, workdir, headers)
                )
            )
            load.start()
            time.sleep(2)
            timehist = record(args.seconds, workdir)
            load.join()

    used = slices(timehist, roles)
    total = sum(sum(counter.values()) for counter in used.values())
    charged = charge_idle(used)
    idle = sum(charged.values())
    print(
        f"{args.model}, {args.connections} connections, --workers {args.workers}: "
        f"{result['rps']:,.0f} req/s; CPUs idle {idle / total:.0%} of {total / 1e3:,.0f} "
        f"CPU-ms traced"
    )
    print("\n| idle CPU time while the other CPUs ran | ms | share of the idle time |")
    print("| --- | ---: | ---: |")
    for role, microseconds in charged.most_common():
        print(f"| {role} | {microseconds / 1e3:,.1f} | {microseconds / idle:.0%} |")


if __name__ == "__main__":
    main()
