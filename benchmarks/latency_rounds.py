"""One client's latency with front-end workers against one process, in interleaved rounds: how
much the worker hop adds to a lone request, and whether it is the hop or the model call.

Each round starts a server with `--workers 0` and one with `--workers N` (in alternating
order), one after the other, per model, and drives each with one `wrk` connection (closed
loop) for `--duration` seconds. Alongside the client's p50 it reads the server's mean model
call (`modelserve_batch_duration_seconds` over the same run), so each difference splits into
the model call's and the rest's ("outside": p50 minus the mean call; the parse, the hop to the
model process and back, the answer). Single runs here vary by more than the hop itself; the
medians of the per-round differences do not.

Run from the repository root:  python benchmarks/latency_rounds.py [--models votes digits]
Needs `wrk` (Debian: apt install wrk).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import serving
from prometheus_client.parser import text_string_to_metric_families

CALL_SECONDS = "modelserve_batch_duration_seconds"


@dataclass
class Sample:
    model: str
    workers: int
    p50_ms: float
    call_ms: float  # mean model call over the run

    @property
    def outside_ms(self) -> float:
        return self.p50_ms - self.call_ms


def call_totals(url: str, model: str) -> tuple[float, float]:
    """(seconds, calls) the server has spent in model calls of `model` so far."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    seconds = calls = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != CALL_SECONDS:
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_sum"):
                seconds += sample.value
            elif sample.name.endswith("_count"):
                calls += sample.value
    return seconds, calls


def measure(model: str, workers: int, seconds: float, workdir: Path) -> Sample:
    with serving.gateway_server("batched", [model], workdir, workers=workers) as server:
        body, headers = serving.v2_request(server.url, model)
        url = f"{server.url}/v2/models/{model}/infer"
        serving.drive(url, body, 1, 2, workdir, headers)  # warm-up
        spent0, calls0 = call_totals(server.url, model)
        result = serving.drive(url, body, 1, seconds, workdir, headers)
        spent1, calls1 = call_totals(server.url, model)
    call_ms = (spent1 - spent0) / max(1.0, calls1 - calls0) * 1000
    return Sample(model, workers, result["p50"], call_ms)


def summary(samples: list[Sample], model: str, workers: int) -> str:
    """One model's medians: p50 with and without workers, and the median per-round difference
    of the p50 (and its range), of the model call and of the rest."""
    alone = [s for s in samples if s.model == model and s.workers == 0]
    hop = [s for s in samples if s.model == model and s.workers == workers]
    pairs = list(zip(alone, hop, strict=True))

    def differences(part: str) -> list[float]:
        return [getattr(b, part) - getattr(a, part) for a, b in pairs]

    p50 = differences("p50_ms")
    return (
        f"| {model} | {len(pairs)} | {statistics.median(s.p50_ms for s in alone):.2f} "
        f"| {statistics.median(s.p50_ms for s in hop):.2f} | {statistics.median(p50):+.2f} "
        f"| {min(p50):+.2f} to {max(p50):+.2f} | {statistics.median(differences('call_ms')):+.2f} "
        f"| {statistics.median(differences('outside_ms')):+.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["votes", "digits", "sentiment"])
    parser.add_argument("--workers", type=int, default=2, help="compared with --workers 0")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt install wrk")
    if args.workers < 1:
        sys.exit("--workers: at least 1 (it is compared with one process, --workers 0)")
    missing = [m for m in args.models if not (serving.MODELS / m).is_dir()]
    if missing:
        sys.exit(f"not exported in {serving.MODELS}: {', '.join(missing)}")

    samples: list[Sample] = []
    print("| round | model | workers | p50 ms | mean model call ms | outside the call ms |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for round_number in range(1, args.rounds + 1):
            order = (0, args.workers) if round_number % 2 else (args.workers, 0)
            for model in args.models:
                for workers in order:
                    sample = measure(model, workers, args.duration, workdir)
                    samples.append(sample)
                    print(
                        f"| {round_number} | {model} | {workers} | {sample.p50_ms:.2f} "
                        f"| {sample.call_ms:.2f} | {sample.outside_ms:.2f} |",
                        flush=True,
                    )

    print(f"\nOne connection, V2 JSON; w={args.workers} against one process (w=0), medians:")
    print(
        f"| model | rounds | p50 w=0 ms | p50 w={args.workers} ms | p50 difference "
        "| per round | of it, the model call | of it, outside the call |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for model in args.models:
        print(summary(samples, model, args.workers))


if __name__ == "__main__":
    main()
