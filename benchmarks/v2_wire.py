"""The Open Inference Protocol's wire formats side by side: V2 REST with JSON tensors, V2 REST
with binary tensors and V2 gRPC with raw contents, modelserve against Triton, in one run.

For each model, each protocol and each server, one closed-loop run over `--connections` (64)
connections after a 1 s warm-up, one instance per request, the same bytes to both servers:
- `json`:   `POST /v2/models/{m}/infer`, the tensor as a flat JSON `data` list;
- `binary`: the same with the tensor in the binary tensor data extension
            (`Inference-Header-Content-Length`) and the outputs asked for as binary;
- `grpc`:   `inference.GRPCInferenceService/ModelInfer` with `raw_input_contents`.
The models: `digits` (models/digits, MNIST 28x28x1 floats, 3 KB as binary) and `image224`, a
SavedModel built here into a temporary model repository: float32 [None, 224, 224, 3] (588 KB as
binary), an 8x8 stride-8 convolution, global average pooling and a dense layer to 10 classes,
cheap enough that taking the request apart dominates, as it would for a float image model on a
GPU. Both servers serve the same repository folder: modelserve as `<name>/<version>/` in its
serving config, Triton through benchmarks/triton_peer.py (PyTriton's bundled Triton, CPU, its
dynamic batcher on) with `--model-dir` and `--grpc-port`; the batch size cap is 128 on both.
Beside modelserve and Triton (`--servers` picks), two servers show what bounds the ratios:
`echo`, modelserve with the model taken out (MODELSERVE_ECHO: zeros for answers, the same
front end, model process and batching), and `floor`, the transports alone
(benchmarks/protocol_floor.py: bare uvicorn and grpc.aio answering prepared bytes; binary REST
and gRPC only). The report gives each run's server CPU time per request.
Every server's answer to each request is checked against the model called in this process
(echo's against zeros) before it is timed, and each run's requests are checked against the
successes the server's statistics extension counted over it (gRPC's status travels in trailers
the load tool does not read; the floor counts nothing).

The load generators, chosen so that the client eats as little of the 2 cores as it can:
- REST: `wrk` (C, one thread), with the Lua script of benchmarks/serving.py;
- gRPC: `h2load` (nghttp2's HTTP/2 load generator, C, one thread) POSTing the pre-serialized,
  length-prefixed ModelInferRequest with gRPC's headers over cleartext HTTP/2: a gRPC call is
  exactly that on the wire. Latency percentiles come from its per-request log.
Each costs the server's cores little (the "client CPU" column: a few % of one core, more for
h2load moving 588 KB requests). Triton's own load generator, perf_analyzer (the binary in the
tritonclient 2.48 wheel; it needs libb64 and the CUDA runtime library), runs against Triton but
not against modelserve today: its gRPC requests carry the parameter
`triton_enable_empty_final_response`, which modelserve rejects as unknown, and over REST it
aborts once it has measured, because modelserve's statistics give `compute_infer` without the
`compute_input` and `compute_output` counts perf_analyzer requires to equal it. One tool for
both servers being the fair choice, neither server gets it here. (Its `--input-data random`
also fills FP32 tensors with random bytes, NaN among them, which JSON cannot carry: give it a
data file.)

Run from the repository root, with modelserve's venv (Triton's peer runs under its own venv,
see benchmarks/serving.py and scripts/triton-venv.sh):
    python benchmarks/v2_wire.py [--duration 8] [--models digits image224]
        [--protocols json binary grpc] [--servers modelserve echo floor triton] [--no-triton]
Needs `wrk` and, for gRPC, `h2load` (Debian: apt install wrk nghttp2-client).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from serving import (  # benchmarks/ is on sys.path
    BINARY_HEADER,
    MODELS,
    ROOT,
    Server,
    ServerProcesses,
    add_triton_arguments,
    batching_for,
    cpu_shares_text,
    describe_run,
    drive,
    free_port,
    gateway_server,
    request_body,
    server_process,
    triton,
    triton_unavailable,
)
from tritonclient.grpc import service_pb2

from service.core.cpu_limit import available_cpus
from service.v2 import raw_tensors

IMAGE_MODEL = "image224"
PROTOCOLS = {"json": "V2 REST JSON", "binary": "V2 REST binary", "grpc": "V2 gRPC raw"}
# modelserve; modelserve with the model taken out (MODELSERVE_ECHO: zeros for answers, the same
# front end, batching and processes); the transports' floor (benchmarks/protocol_floor.py: bare
# uvicorn and grpc.aio answering prepared bytes, binary REST and gRPC only); Triton
SERVERS = ("modelserve", "echo", "floor", "triton")
FLOOR_PROTOCOLS = ("binary", "grpc")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
WARM_UP_SECONDS = 1.0
# The targets for modelserve: binary REST over JSON REST per model, gRPC over binary.
BINARY_TARGETS = {"digits": 1.5, IMAGE_MODEL: 3.0}
GRPC_TARGET = 1.0


@dataclass(frozen=True)
class Request:
    """One instance as one protocol carries it: the body (for gRPC, the length-prefixed message
    as it goes in an HTTP/2 DATA frame) and REST's extra headers."""

    protocol: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Result:
    model: str
    protocol: str
    server: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    server_cpu: dict[str, float]  # % of one core: "total", and by role (ServerProcesses)
    client_cpu: float  # the load generator's, on the same cores
    other_cpu: float  # the machine's busy time less both: anything else running disturbs the run
    request_bytes: int
    errors: int

    @property
    def cpu_us_per_request(self) -> float:
        """The server's CPU time per answered request, every process summed."""
        return self.server_cpu["total"] / 100 / self.requests_per_second * 1e6


# ---- the models ---------------------------------------------------------------------------


def build_image_model(path: Path) -> None:
    """A SavedModel taking float32 [None, 224, 224, 3]: 8 filters of 8x8 at stride 8 (a 28x28
    map), global average pooling, a dense layer to 10 softmax classes; fixed random weights."""
    import tensorflow as tf

    class ImageModel(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            generator = tf.random.Generator.from_seed(0)
            self.kernel = tf.Variable(generator.normal([8, 8, 3, 8], stddev=0.05))
            self.weights = tf.Variable(generator.normal([8, 10], stddev=0.3))
            self.bias = tf.Variable(tf.zeros([10]))

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)]
        )
        def serve(self, image: Any) -> dict[str, Any]:
            features = tf.nn.relu(tf.nn.conv2d(image, self.kernel, strides=8, padding="VALID"))
            pooled = tf.reduce_mean(features, axis=[1, 2])
            return {"probabilities": tf.nn.softmax(pooled @ self.weights + self.bias)}

    model = ImageModel()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})


def model_repository(models: list[str], workdir: Path) -> Path:
    """A model repository both servers serve: models/ entries linked in, `image224` built."""
    repository = workdir / "repository"
    repository.mkdir()
    for model in models:
        if model == IMAGE_MODEL:
            build_image_model(repository / model / "1")
        else:
            (repository / model).symlink_to(MODELS / model)
    return repository


def instance(model: str) -> np.ndarray:
    """The model's input for one request, batch of 1, as the JSON numbers sent: digits the
    MNIST seven of benchmarks/serving.py, the image seeded random pixels; both /255, rounded to
    4 decimals (short JSON numbers, which favour JSON against binary, not the other way)."""
    if model == IMAGE_MODEL:
        pixels = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3))
        return np.round(pixels / 255, 4)
    return np.asarray(request_body(model)["instances"], dtype=np.float64)


def in_process(repository: Path, model: str, values: np.ndarray) -> tuple[str, str, np.ndarray]:
    """The names of the model's one input and one output, and its answer to `values`, called
    in this process (what each server's answer is checked against)."""
    import tensorflow as tf

    version = max(int(p.name) for p in (repository / model).iterdir() if p.name.isdigit())
    loaded = tf.saved_model.load(str(repository / model / str(version)))
    signature = loaded.signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    ((output_name, output),) = signature(**{name: tf.constant(values, tf.float32)}).items()
    return name, output_name, np.asarray(output.numpy())


# ---- the requests -------------------------------------------------------------------------


def requests_for(model: str, input_name: str, values: np.ndarray) -> dict[str, Request]:
    """The same FP32 instance in each protocol's form."""
    shape = list(values.shape)
    raw = raw_tensors.encode(values.astype(np.float32))
    tensor = {"name": input_name, "datatype": "FP32", "shape": shape}
    as_json = json.dumps({"inputs": [{**tensor, "data": values.ravel().tolist()}]}).encode()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    message = service_pb2.ModelInferRequest(model_name=model)
    message.inputs.add(name=input_name, datatype="FP32", shape=shape)
    message.raw_input_contents.append(raw)
    return {
        "json": Request("json", as_json, {}),
        "binary": Request("binary", header + raw, {BINARY_HEADER: str(len(header))}),
        "grpc": Request("grpc", grpc_frame(message.SerializeToString()), {}),
    }


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: an uncompressed flag byte, the length big-endian."""
    return struct.pack(">BI", 0, len(message)) + message


# ---- checking the answers -----------------------------------------------------------------


def answer(url: str, grpc_target: str, model: str, request: Request) -> np.ndarray:
    """The server's output for `request`, sent once by a real client of the protocol."""
    if request.protocol == "grpc":
        with grpc.insecure_channel(grpc_target) as channel:
            # identity (de)serializers: the very bytes h2load sends, less the 5-byte prefix
            call = channel.unary_unary(MODEL_INFER)
            reply = service_pb2.ModelInferResponse.FromString(call(request.body[5:], timeout=30))
        return np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    response = httpx.post(
        f"{url}/v2/models/{model}/infer",
        content=request.body,
        headers={"Content-Type": "application/json", **request.headers},
        timeout=30,
    )
    response.raise_for_status()
    if BINARY_HEADER not in response.headers:
        return np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)
    length = int(response.headers[BINARY_HEADER])
    return np.frombuffer(response.content[length:], dtype="<f4")


def check(url: str, grpc_target: str, model: str, request: Request, want: np.ndarray) -> None:
    got = answer(url, grpc_target, model, request)
    if not np.allclose(got, want.ravel(), rtol=1e-3, atol=1e-5):
        raise RuntimeError(f"{url} {model} {request.protocol}: {got[:5]} != {want.ravel()[:5]}")


def statistics(url: str, model: str) -> tuple[int, int, int]:
    """(successful requests, rows, model executions) so far, from the statistics extension
    both servers serve."""
    stats = httpx.get(f"{url}/v2/models/{model}/stats", timeout=30).json()["model_stats"]
    return (
        sum(s["inference_stats"]["success"]["count"] for s in stats),
        sum(s["inference_count"] for s in stats),
        sum(s["execution_count"] for s in stats),
    )


def wait_for_grpc(target: str, seconds: float = 120) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=seconds)


# ---- the load -----------------------------------------------------------------------------


def grpc_load(
    target: str, frame: bytes, connections: int, seconds: float, workdir: Path
) -> dict[str, float]:
    """h2load POSTing the gRPC frame over `connections` HTTP/2 connections, one call at a
    time on each (a closed loop, as wrk's); the keys of serving.drive's result."""
    body, log = workdir / "grpc.body", workdir / "h2load.log"
    body.write_bytes(frame)
    log.unlink(missing_ok=True)
    command = [
        "h2load",
        f"--clients={connections}",
        "--max-concurrent-streams=1",
        "--threads=1",
        f"--duration={max(1, round(seconds))}",
        f"--data={body}",
        *(f"--header={header}" for header in GRPC_HEADERS),
        f"--log-file={log}",
        f"http://{target}{MODEL_INFER}",
    ]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after, elapsed = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - start
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", output)
    counts = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", output)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if not (rate and counts and statuses):
        raise RuntimeError(f"unexpected h2load output:\n{output}")
    # the log: one line per finished request, "<start µs>\t<HTTP status>\t<duration µs>"
    lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(duration) for _, status, duration in lines if status == "200"])
    p50, p99 = np.percentile(latencies, [50, 99]) / 1000 if latencies.size else (0.0, 0.0)
    return {
        "rps": float(rate.group(1)),
        "p50": float(p50),
        "p99": float(p99),
        "errors": sum(map(int, counts.groups())) + sum(map(int, statuses.groups()[1:])),
        "requests": float(statuses.group(1)),
        "wrk_cpu": cpu / elapsed * 100,
    }


@dataclass(frozen=True)
class Target:
    """Where one server listens, and its processes (for their CPU time)."""

    name: str
    url: str
    grpc: str
    processes: ServerProcesses
    counted: bool = True  # serves the statistics extension (the floor does not)


def load(
    target: Target, model: str, request: Request, connections: int, seconds: float, workdir: Path
) -> dict[str, float]:
    """One run of the protocol's load generator; 'requests' is how many it completed."""
    if request.protocol == "grpc":
        return grpc_load(target.grpc, request.body, connections, seconds, workdir)
    url = f"{target.url}/v2/models/{model}/infer"
    result = drive(url, request.body, connections, seconds, workdir, request.headers)
    result["requests"] = result["rps"] * max(1, round(seconds))  # wrk reports the rate
    return result


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, not idle or waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def measure(
    target: Target, model: str, request: Request, connections: int, seconds: float, workdir: Path
) -> Result:
    """A warm-up run, then the timed one with the server's CPU time and statistics around it."""
    load(target, model, request, connections, WARM_UP_SECONDS, workdir)
    counts0 = statistics(target.url, model) if target.counted else None
    cpu0, busy0, start = target.processes.cpu_seconds(), busy_seconds(), time.monotonic()
    result = load(target, model, request, connections, seconds, workdir)
    elapsed = time.monotonic() - start
    cpu, _, _ = target.processes.usage(cpu0, elapsed)
    busy = (busy_seconds() - busy0) / elapsed * 100
    unanswered, mean_batch = 0, math.nan  # the floor counts nothing, nor batches
    if counts0 is not None:
        successes0, rows0, executions0 = counts0
        successes, rows, executions = statistics(target.url, model)
        # Requests still in flight when the tool stops are answered after it: the server
        # counts at least as many successes as the tool completed requests, unless some failed.
        unanswered = max(0, round(0.99 * result["requests"]) - (successes - successes0))
        mean_batch = (rows - rows0) / max(1, executions - executions0)
    run = Result(
        model,
        request.protocol,
        target.name,
        result["rps"],
        result["p50"],
        result["p99"],
        mean_batch,
        cpu,
        result["wrk_cpu"],
        max(0.0, busy - cpu["total"] - result["wrk_cpu"]),
        len(request.body),
        int(result["errors"]) + unanswered,
    )
    print(
        f"  {target.name:10} {model:9} {PROTOCOLS[request.protocol]:15} "
        f"{run.requests_per_second:8,.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
        f"p99 {run.p99_ms:7.2f} ms  batch {batch_text(run.mean_batch):>5}  "
        f"CPU {cpu_shares_text(run.server_cpu)} ({run.cpu_us_per_request:.0f} µs a request)  "
        f"client {run.client_cpu:3.0f}  "
        f"other {run.other_cpu:3.0f}  "
        f"errors {run.errors}",
        flush=True,
    )
    return run


# ---- the servers --------------------------------------------------------------------------


@contextmanager
def modelserve(
    models: list[str], repository: Path, workdir: Path, echo: bool = False
) -> Iterator[Target]:
    """`modelserve serve` (its default workers) serving the repository, REST and gRPC; with
    `echo`, answering zeros without running the models (`MODELSERVE_ECHO`)."""
    config = {
        "models": [
            {"name": m, "base_path": str(repository / m), "batching": batching_for("batched", m)}
            for m in models
        ]
    }
    grpc_port = free_port()
    mode = "echo" if echo else "batched"  # gateway_server's mode: only echo changes anything
    with gateway_server(
        mode, models, workdir, config=config, extra_args=["--grpc-port", str(grpc_port)]
    ) as server:
        yield target("echo" if echo else "modelserve", server, grpc_port, modelserve=True)


@contextmanager
def floor(
    outputs: dict[str, tuple[str, np.ndarray]], processes: int, workdir: Path
) -> Iterator[Target]:
    """benchmarks/protocol_floor.py in `processes` processes, answering each model's real
    answer (`outputs`: its output's name and values) as modelserve encodes it."""
    rest: dict[str, tuple[int, str]] = {}
    grpc_answers: dict[str, str] = {}
    for model, (name, values) in outputs.items():
        rest_file, grpc_file = workdir / f"{model}.floor-rest", workdir / f"{model}.floor-grpc"
        header_length, rest_body, grpc_body = prepared_answers(model, name, values)
        rest_file.write_bytes(rest_body)
        grpc_file.write_bytes(grpc_body)
        rest[f"/v2/models/{model}/infer"] = (header_length, str(rest_file))
        grpc_answers[model] = str(grpc_file)
    answers = workdir / "floor-answers.json"
    answers.write_text(json.dumps({"rest": rest, "grpc": grpc_answers}))
    port, grpc_port = free_port(), free_port()
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "protocol_floor.py"),
        *("--rest-port", str(port), "--grpc-port", str(grpc_port)),
        *("--answers", str(answers), "--processes", str(processes)),
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process("floor", command, os.environ, [f"{url}/ready"], workdir) as process:
        server = Server(url, process.pid, port)
        yield target("floor", server, grpc_port, modelserve=False, counted=False)


def prepared_answers(model: str, output: str, values: np.ndarray) -> tuple[int, bytes, bytes]:
    """`values` (FP32) as V2 answers: a binary REST answer's JSON header length and whole
    body, and the serialized gRPC answer."""
    raw = raw_tensors.encode(values.astype(np.float32))
    tensor = {"name": output, "datatype": "FP32", "shape": list(values.shape)}
    header = json.dumps(
        {
            "model_name": model,
            "model_version": "1",
            "outputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
        }
    ).encode()
    message = service_pb2.ModelInferResponse(model_name=model, model_version="1")
    message.outputs.add(**tensor)
    message.raw_output_contents.append(raw)
    return len(header), header + raw, message.SerializeToString()


@contextmanager
def triton_peer(
    python: Path, models: list[str], repository: Path, workdir: Path
) -> Iterator[Target]:
    grpc_port = free_port()
    with triton(python, models, workdir, grpc_port=grpc_port, model_dir=repository) as server:
        yield target("triton", server, grpc_port, modelserve=False)


def target(
    name: str, server: Server, grpc_port: int, modelserve: bool, counted: bool = True
) -> Target:
    grpc_target = f"127.0.0.1:{grpc_port}"
    wait_for_grpc(grpc_target)
    processes = ServerProcesses(server, modelserve=modelserve)
    return Target(name, server.url, grpc_target, processes, counted)


def run_server(
    server: AbstractContextManager[Target],
    models: list[str],
    protocols: list[str],
    requests: dict[str, dict[str, Request]],
    wanted: dict[str, np.ndarray],
    connections: int,
    seconds: float,
    workdir: Path,
) -> list[Result]:
    """Every model through every protocol on one server, each answer checked first (echo's
    zeros; the floor serves only the binary extension and gRPC)."""
    results = []
    with server as running:
        print(f"{running.name} ...", flush=True)
        for model in models:
            expected = np.zeros_like(wanted[model]) if running.name == "echo" else wanted[model]
            for protocol in protocols:
                if running.name == "floor" and protocol not in FLOOR_PROTOCOLS:
                    continue
                request = requests[model][protocol]
                check(running.url, running.grpc, model, request, expected)
                results.append(measure(running, model, request, connections, seconds, workdir))
    return results


# ---- the report ---------------------------------------------------------------------------


def markdown(results: list[Result], provenance: list[str], connections: int, seconds: float) -> str:
    lines = [
        *provenance,
        "",
        f"## V2 wire formats at {connections} connections ({seconds:g} s a run)",
        "",
        "One instance per request, the same bytes to both servers; wrk for REST, h2load for "
        "gRPC, on the same 2 cores as the server. CPU: the server's user + system time over the "
        "run in % of one core, all its processes summed (with workers: the model process's and "
        "the workers' shares); client: the load generator's; other: the machine's busy time "
        "less both (the kernel's network time outside them, this script's statistics calls, "
        "and anything else that ran: near 0 in an undisturbed run).",
        "",
        "Servers: `modelserve`; `echo`, the same modelserve with the model taken out "
        "(`MODELSERVE_ECHO`: zeros for answers; the same front end, batching and processes); "
        "`floor`, the transports alone (benchmarks/protocol_floor.py: bare uvicorn and grpc.aio "
        "in as many processes as modelserve has workers, answering the model's answer "
        "prepared in advance); `triton`. CPU µs: the server's CPU time per request.",
        "",
        "| model | protocol | server | req/s | p50 ms | p99 ms | mean batch | server CPU % "
        "| CPU µs a request | client CPU % | other CPU % | request bytes | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {PROTOCOLS[r.protocol]} | {r.server} | "
            f"{r.requests_per_second:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{batch_text(r.mean_batch)} | {cpu_shares_text(r.server_cpu)} | "
            f"{r.cpu_us_per_request:.0f} | {r.client_cpu:.0f} | {r.other_cpu:.0f} | "
            f"{r.request_bytes:,} | {r.errors} |"
        )
    lines += ratio_tables(results)
    lines += targets(results)
    return "\n".join(lines) + "\n"


def batch_text(mean_batch: float) -> str:
    return "-" if math.isnan(mean_batch) else f"{mean_batch:.1f}"


def rate(results: list[Result], model: str, protocol: str, server: str) -> float | None:
    return next(
        (
            r.requests_per_second
            for r in results
            if (r.model, r.protocol, r.server) == (model, protocol, server)
        ),
        None,
    )


def ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}x" if numerator and denominator else "-"


def ratio_tables(results: list[Result]) -> list[str]:
    models = list(dict.fromkeys(r.model for r in results))
    servers = [s for s in SERVERS if any(r.server == s for r in results)]
    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in results)]
    lines = [
        "",
        "## Ratios of req/s",
        "",
        "| model | server | binary / JSON | gRPC / binary |",
        "| --- | --- | ---: | ---: |",
    ]
    for model in models:
        for server in servers:
            json_rate, binary_rate, grpc_rate = (
                rate(results, model, p, server) for p in ("json", "binary", "grpc")
            )
            lines.append(
                f"| {model} | {server} | {ratio(binary_rate, json_rate)} | "
                f"{ratio(grpc_rate, binary_rate)} |"
            )
    if "triton" in servers:
        lines += ["", "| model | protocol | modelserve / Triton |", "| --- | --- | ---: |"]
        for model in models:
            for protocol in protocols:
                ours = rate(results, model, protocol, "modelserve")
                theirs = rate(results, model, protocol, "triton")
                lines.append(f"| {model} | {PROTOCOLS[protocol]} | {ratio(ours, theirs)} |")
    return lines


def targets(results: list[Result]) -> list[str]:
    """The issue's targets for modelserve, each with its measured ratio."""
    lines = []
    for model, wanted in BINARY_TARGETS.items():
        binary = rate(results, model, "binary", "modelserve")
        json_rate = rate(results, model, "json", "modelserve")
        if binary and json_rate:
            lines.append(verdict(f"{model}: binary REST / JSON REST", binary / json_rate, wanted))
    for model in dict.fromkeys(r.model for r in results):
        grpc_rate = rate(results, model, "grpc", "modelserve")
        binary = rate(results, model, "binary", "modelserve")
        if grpc_rate and binary:
            lines.append(verdict(f"{model}: gRPC / binary REST", grpc_rate / binary, GRPC_TARGET))
    heading = ["", "## Targets (modelserve)", "", *lines] if lines else []
    return [*heading, *limits(results)]


def limits(results: list[Result]) -> list[str]:
    """What bounds the ratios, from the echo and floor runs: the same protocols without the
    model, and without any serving code."""
    lines = []
    for model in dict.fromkeys(r.model for r in results):
        json_echo, binary_echo, grpc_echo = (
            rate(results, model, p, "echo") for p in ("json", "binary", "grpc")
        )
        if binary_echo and (json_echo or grpc_echo):
            lines.append(
                f"- {model}, the front end alone (echo): binary / JSON "
                f"{ratio(binary_echo, json_echo)}, gRPC / binary {ratio(grpc_echo, binary_echo)}"
            )
        floor_runs = {r.protocol: r for r in results if (r.model, r.server) == (model, "floor")}
        if {"binary", "grpc"} <= floor_runs.keys():
            rest, grpc_run = floor_runs["binary"], floor_runs["grpc"]
            lines.append(
                f"- {model}, the transports alone (floor): gRPC / binary REST "
                f"{ratio(grpc_run.requests_per_second, rest.requests_per_second)}; CPU a call: "
                f"uvicorn {rest.cpu_us_per_request:.0f} µs, grpc.aio "
                f"{grpc_run.cpu_us_per_request:.0f} µs"
            )
    return ["", "## What bounds the ratios, measured in the same run", "", *lines] if lines else []


def verdict(what: str, value: float, wanted: float) -> str:
    met = "met" if value >= wanted else "NOT met"
    return f"- {what}: {value:.2f}x, target >= {wanted:g}x: {met}"


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["digits", IMAGE_MODEL])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--duration", type=float, default=8, help="seconds per timed run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=list(SERVERS),
        choices=list(SERVERS),
        help="which servers to run (default all; --no-triton also drops triton)",
    )
    add_triton_arguments(parser)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    missing_tools = [t for t in ("wrk", "h2load") if shutil.which(t) is None]
    if missing_tools:
        sys.exit(f"not found: {missing_tools} (Debian: apt install wrk nghttp2-client)")
    unknown = [m for m in args.models if m != IMAGE_MODEL and not (MODELS / m).is_dir()]
    if unknown:
        sys.exit(f"not in models/ and not {IMAGE_MODEL}: {unknown}")
    skip_triton = "--no-triton" if args.no_triton else triton_unavailable(args.triton_python)
    if "triton" in args.servers and skip_triton:
        print(f"Triton peer skipped: {skip_triton}", flush=True)
    provenance = describe_run()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repository = model_repository(args.models, workdir)
        requests, wanted = {}, {}
        outputs = {}
        for model in args.models:  # each has one FP32 input and one output
            values = instance(model)
            input_name, output_name, wanted[model] = in_process(repository, model, values)
            requests[model] = requests_for(model, input_name, values)
            outputs[model] = (output_name, wanted[model])
        starts = {
            "modelserve": lambda: modelserve(args.models, repository, workdir),
            "echo": lambda: modelserve(args.models, repository, workdir, echo=True),
            "floor": lambda: floor(outputs, available_cpus(), workdir),  # as many as workers
            "triton": lambda: triton_peer(args.triton_python, args.models, repository, workdir),
        }
        chosen = [s for s in SERVERS if s in args.servers and not (s == "triton" and skip_triton)]
        servers = [starts[name]() for name in chosen]
        results = [
            result
            for server in servers
            for result in run_server(
                server,
                args.models,
                args.protocols,
                requests,
                wanted,
                args.connections,
                args.duration,
                workdir,
            )
        ]
    text = markdown(results, provenance, args.connections, args.duration)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "v2_wire.md").write_text(text)
    print()
    print(text)
    print(f"written: {args.output / 'v2_wire.md'}")


if __name__ == "__main__":
    main()
