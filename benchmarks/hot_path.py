"""Where a request's time goes before any model runs: modelserve in echo mode (the whole HTTP,
JSON, validation and batching path, answers without inference) against a bare FastAPI route
parsing the same body (`benchmarks/bare_fastapi.py`), side by side in one run, and optionally
a profile of the echo server under that load.

Each round starts both servers fresh, in alternating order, and drives each with `wrk` at
`--connections` for `--duration` seconds (votes, one instance per request). Prints req/s, the
time per request (1 / req/s: the machine's two cores are shared by wrk and the server), the
server's CPU time per request (user + system, all its threads: steadier than req/s when wrk
and the server compete for the cores) and echo / bare by both.

`--profile` samples the echo server's event-loop thread with py-spy (`pip install py-spy`)
during one more run and prints the functions that hold the most of it (inclusive share).

Run from the repository root:  python benchmarks/hot_path.py [--rounds 3] [--profile]
Needs `wrk` (Debian: apt install wrk).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import serving

MODEL = "votes"
ROUTE = f"/v1/models/{MODEL}:predict"


@contextmanager
def bare_server(workdir: Path) -> Iterator[serving.Server]:
    port = serving.free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_fastapi:app",
        "--app-dir",
        str(Path(__file__).parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    with serving.server_process("bare", command, env, [f"{url}/docs"], workdir) as process:
        yield serving.Server(url, process.pid, port)


def measure(
    server: serving.Server, connections: int, seconds: float, workdir: Path
) -> tuple[float, float]:
    """Requests per second over one timed run, after a 1 s warm-up, and the server's CPU
    microseconds per request over it."""
    url = server.url + ROUTE
    body = json.dumps(serving.request_body(MODEL)).encode()
    serving.drive(url, body, connections, 1, workdir)
    processes = serving.ServerProcesses(server, modelserve=False)
    before = processes.cpu_seconds()
    result = serving.drive(url, body, connections, seconds, workdir)
    if result["errors"]:
        raise RuntimeError(f"{server.url}: {result['errors']} errors")
    after = processes.cpu_seconds()
    used = sum(after.get(pid, 0.0) - before.get(pid, 0.0) for pid in after)
    return result["rps"], used / (result["rps"] * seconds) * 1e6


def profile(
    server: serving.Server, connections: int, seconds: float, workdir: Path, top: int
) -> None:
    """py-spy samples of the echo server's event loop while wrk drives it."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("profile skipped: py-spy not found (pip install py-spy)")
        return
    raw = workdir / "profile.txt"
    load = threading.Thread(target=measure, args=(server, connections, seconds + 2, workdir))
    load.start()
    subprocess.run(
        [py_spy, "record", "--pid", str(server.pid), "--duration", str(round(seconds)),
         "--rate", "500", "--format", "raw", "--output", str(raw), "--nonblocking"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    load.join()
    shares, samples = loop_shares(raw)
    print(f"\nevent-loop thread, {samples} samples: share of them inside each function")
    for function, count in shares.most_common(top):
        print(f"  {count / samples:6.1%}  {function}")


def loop_shares(raw: Path) -> tuple[collections.Counter[str], int]:
    """Inclusive sample counts per function (line numbers dropped) on the event-loop thread:
    the stacks that pass through asyncio's runner."""
    shares: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}
        if not stack or not any("asyncio/runners.py" in frame for frame in frames):
            continue
        samples += int(count)
        for frame in frames:
            shares[frame] += int(count)
    return shares, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--profile", action="store_true", help="py-spy the echo server")
    parser.add_argument("--top", type=int, default=40, help="functions the profile lists")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt install wrk")
    rates: dict[str, list[float]] = {"bare": [], "echo": []}
    costs: dict[str, list[float]] = {"bare": [], "echo": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for round_number in range(args.rounds):
            order = ("bare", "echo") if round_number % 2 == 0 else ("echo", "bare")
            for name in order:
                with _server(name, workdir) as server:
                    rate, cost = measure(server, args.connections, args.duration, workdir)
                rates[name].append(rate)
                costs[name].append(cost)
                print(
                    f"  round {round_number + 1} {name:5} {rate:8,.0f} req/s "
                    f"{cost:6,.0f} µs CPU a request",
                    flush=True,
                )
        if args.profile:
            with _server("echo", workdir) as server:
                profile(server, args.connections, args.duration, workdir, args.top)
    bare, echo = (statistics.median(rates[name]) for name in ("bare", "echo"))
    bare_cpu, echo_cpu = (statistics.median(costs[name]) for name in ("bare", "echo"))
    print(
        f"\n| server | req/s (median of {args.rounds}) | µs per request | server CPU µs a request |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, rate, cost in (
        ("bare FastAPI route", bare, bare_cpu),
        ("modelserve echo mode", echo, echo_cpu),
    ):
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:,.0f} | {cost:,.0f} |")
    print(f"\necho / bare: {echo / bare:.2f} ({1e6 / echo - 1e6 / bare:,.0f} µs more per request)")
    print(
        f"by server CPU a request: {bare_cpu / echo_cpu:.2f} ({echo_cpu - bare_cpu:,.0f} µs more)"
    )


@contextmanager
def _server(name: str, workdir: Path) -> Iterator[serving.Server]:
    if name == "bare":
        with bare_server(workdir) as server:
            yield server
    else:
        # One process (no front-end workers, no model process): the target is per process.
        extra_args = ("--grpc-port", "0", "--workers", "0")
        with serving.gateway_server("echo", [MODEL], workdir, extra_args=extra_args) as server:
            yield server


if __name__ == "__main__":
    main()
