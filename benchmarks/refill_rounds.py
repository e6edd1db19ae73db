"""A model with `refill` (hold `--hold` calls), without it, and the Triton peer, in
interleaved rounds: each round starts the three servers fresh, one after the other, and drives
each with `wrk` for `--duration` seconds. Run-to-run noise here is 10-15 %, so single runs
cannot tell a 10 % change; rounds side by side can. Prints each round and the medians, with
ratios. `--think-ms` makes each client pause a random 0 to 2x that long before its next
request: the traffic refill can cost (the answered clients come back late, after the hold).

Run from the repository root:  python benchmarks/refill_rounds.py [--model digits] [--rounds 6]
Needs `wrk` and the Triton venv (bash scripts/triton-venv.sh), like benchmarks/serving.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import serving

VARIANTS = ("refill", "no refill", "triton")


def server_of(
    variant: str, model: str, workers: int, hold: float, workdir: Path
) -> AbstractContextManager[Any]:
    if variant == "triton":
        return serving.triton(serving.TRITON_PYTHON, [model], workdir)
    shipped = serving.batching_for("batched", model)
    batching = {key: value for key, value in shipped.items() if not key.startswith("refill")}
    if variant == "refill":
        batching |= {"refill": True, "refill_hold": hold}
    entry = {"name": model, "base_path": str(serving.MODELS / model), "batching": batching}
    config = {"models": [entry]}
    return serving.gateway_server("batched", [model], workdir, config=config, workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--hold", type=float, default=1.0, help="refill_hold, in model calls")
    parser.add_argument("--think-ms", type=float, default=0.0, help="clients' mean pause")
    args = parser.parse_args()
    triton_python = serving.TRITON_PYTHON if serving.TRITON_PYTHON.exists() else None
    if problem := serving.triton_unavailable(triton_python):
        sys.exit(problem)

    rps: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    print("| round | server | req/s | p50 ms | p99 ms |\n| ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for round_number in range(1, args.rounds + 1):
            for variant in VARIANTS:
                with server_of(variant, args.model, args.workers, args.hold, workdir) as server:
                    body, headers = serving.v2_request(server.url, args.model)
                    url = f"{server.url}/v2/models/{args.model}/infer"
                    load = partial(serving.drive, url, body, args.connections, workdir=workdir)
                    load(2, headers=headers, think_ms=args.think_ms)  # warm-up
                    result = load(args.duration, headers=headers, think_ms=args.think_ms)
                rps[variant].append(result["rps"])
                print(
                    f"| {round_number} | {variant} | {result['rps']:,.0f} | {result['p50']:.1f} "
                    f"| {result['p99']:.1f} |",
                    flush=True,
                )

    triton = rps["triton"]
    print(
        f"\n{args.model}, {args.connections} connections (think {args.think_ms:g} ms), modelserve"
        f" with {args.workers} workers, refill_hold {args.hold:g}"
    )
    print("| server | median req/s | / Triton (medians) | / Triton, median of rounds |")
    print("| --- | ---: | ---: | ---: |")
    for variant in VARIANTS:
        median = statistics.median(rps[variant])
        per_round = statistics.median(a / b for a, b in zip(rps[variant], triton, strict=True))
        print(f"| {variant} | {median:,.0f} | {median / statistics.median(triton):.2f}x "
              f"| {per_round:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
