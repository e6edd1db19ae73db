"""gRPC vs REST, direct vs through a gateway with a remote backend, side by side in one run.

Two `modelserve serve` processes: a **backend** serving the shipped models, and a **gateway**
whose models are `backend: {grpc: <the backend>}` (it batches and forwards one Predict per
batch). One Python asyncio client drives each (target, protocol, model, concurrency) for a
fixed time with a closed loop of `concurrency` workers, all with the same request:
- REST: `POST /v1/models/{m}:predict` (httpx, keep-alive, one connection per worker);
- gRPC: `PredictionService.Predict` (grpc.aio, one channel, `tf.make_tensor_proto` input).
The client shares the machine's cores with the servers, so absolute numbers are low; compare
the rows with each other.

Run from the repository root:  python benchmarks/grpc_vs_rest.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import tensorflow as tf
from serving import MNIST_SEVEN, REPUBLICAN_VOTES, free_port, gateway  # benchmarks/ is on sys.path
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

INPUTS = {"digits": "image", "votes": "votes"}


def model_input(model: str) -> np.ndarray:
    if model == "digits":
        image = tf.io.decode_png(MNIST_SEVEN.read_bytes())
        return (np.asarray(image, np.float32) / 255.0)[np.newaxis]
    return np.array([REPUBLICAN_VOTES], np.float32)


@dataclass
class Row:
    target: str
    protocol: str
    model: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def closed_loop(
    call: Callable[[], Awaitable[None]], concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """`concurrency` workers calling `call` back to back for `seconds`."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - started, latencies


async def drive_rest(url: str, model: str, concurrency: int, seconds: float) -> Row:
    body = json.dumps({"instances": model_input(model).tolist()}).encode()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def call() -> None:
            response = await client.post(
                f"/v1/models/{model}:predict",
                content=body,
                headers={"content-type": "application/json"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"REST {model}: {response.status_code} {response.text}")

        await closed_loop(call, concurrency, 1.0)  # warm connections
        count, elapsed, latencies = await closed_loop(call, concurrency, seconds)
    return Row("", "REST", model, concurrency, count, elapsed, latencies)


async def drive_grpc(target: str, model: str, concurrency: int, seconds: float) -> Row:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[INPUTS[model]].CopyFrom(tf.make_tensor_proto(model_input(model)))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def call() -> None:
            await stub.Predict(request, timeout=30)

        await closed_loop(call, concurrency, 1.0)
        count, elapsed, latencies = await closed_loop(call, concurrency, seconds)
    return Row("", "gRPC", model, concurrency, count, elapsed, latencies)


def table(rows: list[Row]) -> str:
    lines = [
        "| target | protocol | model | concurrency | req/s | p50 ms | p99 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.protocol} | {r.model} | {r.concurrency} | {r.rate:,.0f} | "
            f"{r.percentile(50):.2f} | {r.percentile(99):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--models", nargs="+", default=["digits", "votes"], choices=INPUTS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        workdir = Path(scratch)
        backend_grpc = free_port()
        backend_url = servers.enter_context(
            gateway("backend", args.models, workdir, extra_args=["--grpc-port", str(backend_grpc)])
        )
        gateway_grpc = free_port()
        remote_config = {
            "models": [
                {"name": m, "backend": {"grpc": f"127.0.0.1:{backend_grpc}"}} for m in args.models
            ]
        }
        gateway_url = servers.enter_context(
            gateway(
                "gateway",
                args.models,
                workdir,
                config=remote_config,
                extra_args=["--grpc-port", str(gateway_grpc)],
            )
        )
        targets = [
            ("direct", backend_url, f"127.0.0.1:{backend_grpc}"),
            ("via gateway", gateway_url, f"127.0.0.1:{gateway_grpc}"),
        ]
        rows: list[Row] = []
        for model in args.models:
            for concurrency in args.concurrency:
                for name, url, grpc_target in targets:
                    for drive in ("REST", "gRPC"):
                        row = asyncio.run(
                            drive_rest(url, model, concurrency, args.seconds)
                            if drive == "REST"
                            else drive_grpc(grpc_target, model, concurrency, args.seconds)
                        )
                        row.target = name
                        rows.append(row)
                        print(
                            f"{name:12} {drive:5} {model:8} c={concurrency:<3} "
                            f"{row.rate:8,.0f} req/s  p50 {row.percentile(50):7.2f} ms  "
                            f"p99 {row.percentile(99):7.2f} ms",
                            flush=True,
                        )
    text = table(rows)
    print()
    print(text)
    for model in args.models:
        for concurrency in args.concurrency:
            pick = {
                (r.target, r.protocol): r.rate
                for r in rows
                if r.model == model and r.concurrency == concurrency
            }
            grpc_gain = statistics.mean(
                pick[(t, "gRPC")] / pick[(t, "REST")] for t in ("direct", "via gateway")
            )
            hop = statistics.mean(
                pick[("via gateway", p)] / pick[("direct", p)] for p in ("REST", "gRPC")
            )
            print(
                f"{model} c={concurrency}: gRPC/REST throughput x{grpc_gain:.2f}; "
                f"through the gateway/direct x{hop:.2f}"
            )
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
