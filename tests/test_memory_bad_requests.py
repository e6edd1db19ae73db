"""Bad requests do not leak memory: `modelserve serve` as a process of its own answers 10,000
requests drawn from the nasty corpus (tests/nasty_inputs.py: every error case but the 100 MB
ones, over CLIENTS concurrent connections), and its memory afterwards is where it was before.

The server first answers WARMUP of the same requests, so that what grows once and then stays
(allocator arenas, caches, the first use of each code path) is in the "before" figures. Then
memory is read from /proc/<pid>/status after every 1,000 requests:
- VmRSS after the 10,000 is within RSS_BOUND (5 %) of before. It counts the pages of mapped
  files too (TensorFlow's libraries, ~370 MiB), which the kernel drops and reloads as the
  machine needs memory, so it moves by tens of MiB for reasons of its own.
- RssAnon, the process's own (heap) pages, is where a leak shows, and a leak only ever adds:
  the sum of its rises between readings stays within ANON_BOUND (6 MiB). Measured here: about
  1.5 MiB without a leak; 7 MiB with a leak of 1 KiB per JSON request planted in the parser.
  A sum of rises, not after minus before, because memory freed meanwhile would hide a leak:
  the server releases ~35 MiB of its start-up heap once, around its 12,000th request (with
  the planted leak, after minus before was -28 MiB).
The figures are printed and written to tests/artifacts/memory-bad-requests.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from tests.nasty_inputs import RestCase, build_repository, rest_cases
from tests.server import free_port
from tests.test_cli import MODELSERVE
from tests.test_cli_serve import wait_ready

WARMUP = 1_000
REQUESTS = 10_000
READ_EVERY = 1_000
CLIENTS = 4
RSS_BOUND = 0.05  # VmRSS after vs before, relative
ANON_BOUND = 6 * 1024  # KiB: the sum of RssAnon's rises over REQUESTS
REPORT = Path(__file__).parent / "artifacts" / "memory-bad-requests.json"


@contextmanager
def server_process(root: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`modelserve serve` of the corpus' models; its output goes to a file (a pipe nobody
    reads would fill up and stall the server)."""
    repo, config = build_repository(root)
    port = free_port()
    options = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--grpc-port": "0",
        "--model-base-path": str(repo),
        "--config": str(config),
        "--poll-interval": "0",
        "--log-level": "warning",
    }
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [MODELSERVE, "serve", *(part for option in options.items() for part in option)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process (KiB), the lowest of a few readings a moment apart: the
    requests have been answered, but a worker thread may still be letting go of one."""
    readings = []
    for _ in range(3):
        time.sleep(0.1)
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0])  # "VmRSS:  812345 kB"
        readings.append(fields)
    return {name: min(reading[name] for reading in readings) for name in readings[0]}


def send_all(url: str, cases: Sequence[RestCase]) -> Counter[str]:
    """Sends the cases over CLIENTS concurrent connections; counts the statuses answered and
    every answer that is not the case's own status."""
    seen: Counter[str] = Counter()

    def worker(share: Sequence[RestCase]) -> Counter[str]:
        counts: Counter[str] = Counter()
        with httpx.Client(base_url=url, timeout=30) as client:
            for case in share:
                response = client.post(case.path, content=case.body, headers=case.request_headers())
                counts[str(response.status_code)] += 1
                if response.status_code != case.status:
                    counts[f"wrong status for {case.id}: {response.status_code}"] += 1
        return counts

    with ThreadPoolExecutor(CLIENTS) as pool:
        for counts in pool.map(worker, [cases[i::CLIENTS] for i in range(CLIENTS)]):
            seen.update(counts)
    return seen


def test_bad_requests_do_not_grow_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = [case for case in rest_cases() if case.status != 200 and not case.huge]
    rng = random.Random(20240)
    warmup = rng.choices(corpus, k=WARMUP)
    burst = rng.choices(corpus, k=REQUESTS)
    seen: Counter[str] = Counter()
    with server_process(tmp_path) as (url, process):
        wait_ready(url, process)
        send_all(url, warmup)
        readings = [memory_kib(process.pid)]
        started = time.monotonic()
        for start in range(0, REQUESTS, READ_EVERY):
            seen.update(send_all(url, burst[start : start + READ_EVERY]))
            readings.append(memory_kib(process.pid))
        seconds = time.monotonic() - started
        assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
    before, after = readings[0], readings[-1]
    anon = [reading["RssAnon"] for reading in readings]
    rises = sum(max(0, later - earlier) for earlier, later in pairwise(anon))
    figures = {
        "requests": REQUESTS,
        "distinct_cases": len(corpus),
        "clients": CLIENTS,
        "seconds": round(seconds, 1),
        "before_kib": before,
        "after_kib": after,
        "rss_anon_kib_every_1000": anon,
        "rss_anon_rises_kib": rises,
        "statuses": {k: v for k, v in sorted(seen.items()) if k.isdigit()},
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    with capsys.disabled():  # the figures are shown in every run
        print(f"\n{REQUESTS} bad requests in {seconds:.1f} s; memory before -> after (MiB):")
        for name in ("VmRSS", "RssAnon"):
            change = (after[name] - before[name]) / 1024
            print(f"  {name} {before[name] / 1024:.1f} -> {after[name] / 1024:.1f} ({change:+.1f})")
        print(f"  RssAnon's rises between readings: {rises / 1024:.1f}")
    wrong = {k: v for k, v in seen.items() if not k.isdigit()}
    assert not wrong, wrong
    assert not any(status.startswith("5") for status in seen), seen
    assert after["VmRSS"] - before["VmRSS"] <= RSS_BOUND * before["VmRSS"], figures
    assert rises <= ANON_BOUND, figures
