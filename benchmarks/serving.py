"""The serving benchmark: dynamic batching against the ceilings and the floor, in one run.

For each model (default digits, votes, sentiment; add resnet50 when exported):
1. the in-process ceiling: the SavedModel's signature called directly at batch sizes 1..64;
2. the gateway, driven by `wrk` at 1, 16 and 64 connections, one instance per request through
   `POST /v1/models/{m}:predict`, in three modes, each a fresh `modelserve serve` process:
   - `batched`: dynamic batching as configured by default;
   - `naive`:   `batching.enabled: false`, one model call per request (the floor);
   - `echo`:    the same JSON parsing, validation and batching, answers without inference
                (the HTTP/JSON ceiling; `MODELSERVE_ECHO=true`);
3. prints one table (req/s, p50, p99, mean batch size), writes it as markdown and a PNG plot.

Run from the repository root:  python benchmarks/serving.py [--duration 10] [--models digits votes]
Needs `wrk` (Debian: apt install wrk).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MNIST_SEVEN = ROOT / "tests" / "fixtures" / "mnist" / "test0000_label7.png"
REVIEW = (
    "This film was a delight from start to finish: sharp writing, a warm and funny cast, and "
    "a final act that earns every one of its tears. I would happily watch it again."
)
REPUBLICAN_VOTES = [-1, 1, -1, 1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1]
MODES = ("batched", "naive", "echo")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Run:
    model: str
    mode: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float


def request_body(model: str) -> dict[str, Any]:
    if model == "digits":
        pixels = np.asarray(Image.open(MNIST_SEVEN).convert("L"), dtype=np.float32) / 255
        return {"instances": [np.round(pixels, 4).reshape(28, 28, 1).tolist()]}
    if model == "votes":
        return {"instances": [REPUBLICAN_VOTES]}
    if model == "sentiment":
        return {"instances": [REVIEW]}
    if model == "resnet50":
        photo = next((ROOT.parent / "shared" / "data").glob("**/*.jpg"), None)
        raw = photo.read_bytes() if photo else MNIST_SEVEN.read_bytes()
        return {"instances": [{"b64": base64.b64encode(raw).decode()}]}
    raise ValueError(model)


def in_process_model(model: str) -> tuple[Any, dict[str, np.ndarray]]:
    """The model's newest version loaded in this process, and the benchmark's instance as its
    `serving_default` input, decoded as the gateway decodes it."""
    from service.core.runtime import LoadedModel
    from service.core.tensors import decode_tensor

    version = max(int(p.name) for p in (MODELS / model).iterdir() if p.name.isdigit())
    loaded = LoadedModel(model, version, MODELS / model / str(version))
    (spec,) = loaded.signatures["serving_default"].inputs.values()
    one = decode_tensor(request_body(model)["instances"], spec, what="x", allow_b64=True)
    return loaded, {spec.name: one}


def in_process_ceiling(
    model: str, sizes: list[int], seconds: float
) -> list[tuple[int, float, float]]:
    """(batch size, samples/s, ms per call) calling the signature directly, no server."""
    loaded, one = in_process_model(model)
    (name,) = one
    rows = []
    for size in sizes:
        batch = {name: np.repeat(one[name], size, axis=0)}
        loaded.call_tensors("serving_default", batch)  # trace and warm this size
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            loaded.call_tensors("serving_default", batch)
            calls += 1
        elapsed = time.perf_counter() - start
        rows.append((size, calls * size / elapsed, elapsed / calls * 1000))
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway(
    mode: str,
    models: list[str],
    workdir: Path,
    *,
    config: dict[str, Any] | None = None,
    extra_args: Sequence[str] = ("--grpc-port", "0"),
) -> Iterator[str]:
    """A `modelserve serve` process in the given mode (or with the given serving `config`);
    yields its base URL."""
    batching = {"enabled": False} if mode == "naive" else {}
    config = config or {
        "models": [{"name": m, "base_path": str(MODELS / m), "batching": batching} for m in models]
    }
    config_file = workdir / f"{mode}.json.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MODELSERVE_ECHO": str(mode == "echo")}
    command = [
        str(Path(sys.executable).parent / "modelserve"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config_file),
        "--log-level",
        "warning",
        *extra_args,
    ]
    log = (workdir / f"{mode}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{mode} server exited; see {log.name}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{mode} server not ready in 300 s; see {log.name}")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def batch_counters(url: str, model: str) -> tuple[int, int]:
    """(rows, batches) the server ran for the model so far."""
    overview = httpx.get(f"{url}/api/v1/models", timeout=10).json()
    rows = batches = 0
    for entry in overview["models"]:
        if entry["name"] == model:
            for version in entry["versions"]:
                for stats in version.get("batching", {}).values():
                    rows += stats["rows"]
                    batches += stats["batches"]
    return rows, batches


def drive(
    url: str, model: str, connections: int, seconds: float, workdir: Path
) -> dict[str, float]:
    body_file = workdir / f"{model}.json"
    body_file.write_text(json.dumps(request_body(model)))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"{url}/v1/models/{model}:predict",
    ]
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(body_file)},
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    requests, duration_us, errors, non2xx, p50_us, p99_us = map(int, line.split()[1:])
    return {
        "rps": requests / (duration_us / 1e6),
        "p50": p50_us / 1000,
        "p99": p99_us / 1000,
        "errors": errors + non2xx,
    }


def run_gateway(
    models: list[str], modes: list[str], connections: list[int], seconds: float, workdir: Path
) -> list[Run]:
    runs = []
    for mode in modes:
        with gateway(mode, models, workdir) as url:
            for model in models:
                for conns in connections:
                    drive(url, model, conns, 1, workdir)  # warm the connection path
                    rows0, batches0 = batch_counters(url, model)
                    result = drive(url, model, conns, seconds, workdir)
                    rows1, batches1 = batch_counters(url, model)
                    mean = (rows1 - rows0) / max(1, batches1 - batches0)
                    runs.append(
                        Run(
                            model,
                            mode,
                            conns,
                            result["rps"],
                            result["p50"],
                            result["p99"],
                            int(result["errors"]),
                            mean,
                        )
                    )
                    print(
                        f"  {mode:8} {model:10} c={conns:<3} {result['rps']:8.0f} req/s  "
                        f"p50 {result['p50']:7.2f} ms  p99 {result['p99']:7.2f} ms  "
                        f"batch {mean:5.2f}  errors {int(result['errors'])}",
                        flush=True,
                    )
    return runs


def markdown(runs: list[Run], ceilings: dict[str, list[tuple[int, float, float]]]) -> str:
    lines = [
        "## Gateway (wrk, one instance per request)",
        "",
        "| model | connections | mode | req/s | p50 ms | p99 ms | mean batch | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.model} | {r.connections} | {r.mode} | {r.requests_per_second:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.mean_batch:.2f} | {r.errors} |"
        )
    lines += [
        "",
        "## Ratios at the highest concurrency",
        "",
        "| model | batched / naive | batched / echo | p99 batched vs naive (ms) |",
        "| --- | ---: | ---: | --- |",
    ]
    top = max(r.connections for r in runs)
    for model in dict.fromkeys(r.model for r in runs):
        by_mode = {r.mode: r for r in runs if r.model == model and r.connections == top}
        if set(by_mode) != set(MODES):
            continue
        b, n, e = by_mode["batched"], by_mode["naive"], by_mode["echo"]
        lines.append(
            f"| {model} | {b.requests_per_second / n.requests_per_second:.2f}x | "
            f"{b.requests_per_second / e.requests_per_second:.0%} | "
            f"{b.p99_ms:.1f} vs {n.p99_ms:.1f} |"
        )
    lines += ["", "## At 1 connection: p50 batched - naive", ""]
    low = min(r.connections for r in runs)
    for model in dict.fromkeys(r.model for r in runs):
        by_mode = {r.mode: r for r in runs if r.model == model and r.connections == low}
        if {"batched", "naive"} <= set(by_mode):
            difference = by_mode["batched"].p50_ms - by_mode["naive"].p50_ms
            lines.append(f"- {model}: {difference:+.2f} ms")
    lines += [
        "",
        "## In-process ceiling (signature called directly)",
        "",
        "| model | batch | samples/s | ms per call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for model, rows in ceilings.items():
        for size, rate, ms in rows:
            lines.append(f"| {model} | {size} | {rate:,.0f} | {ms:.2f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], ceilings: dict[str, list[tuple[int, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in runs))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for mode, style in zip(MODES, ("o-", "s--", "^:"), strict=True):
            points = sorted(
                (r.connections, r.requests_per_second)
                for r in runs
                if r.model == model and r.mode == mode
            )
            ax.plot(*zip(*points, strict=True), style, label=mode)
        best = max((rate for _, rate, _ in ceilings.get(model, [])), default=0.0)
        if best:
            ax.axhline(best, color="grey", lw=0.8, label="in-process ceiling")
        ax.set(title=model, xlabel="connections", ylabel="requests/s", xscale="log", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("modelserve: dynamic batching vs naive and the echo ceiling")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["digits", "votes", "sentiment"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--replot", action="store_true", help="redraw table and plot from <output>/serving.json"
    )
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((args.output / "serving.json").read_text())
        runs = [Run(**run) for run in saved["runs"]]
        ceilings = {
            model: [(int(size), float(rate), float(ms)) for size, rate, ms in rows]
            for model, rows in saved["ceilings"].items()
        }
        write_results(runs, ceilings, args.output)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt install wrk")
    missing = [m for m in args.models if not (MODELS / m).is_dir()]
    if missing:
        sys.exit(f"not in models/: {missing} (resnet50: modelserve train resnet50 --weights none)")
    args.output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("in-process ceiling ...", flush=True)
    sizes = [] if args.no_ceiling else [1, 2, 4, 8, 16, 32, 64]
    ceilings = {m: in_process_ceiling(m, sizes, 1.0) for m in args.models}
    for model, rows in ceilings.items():
        print(f"  {model:10} " + "  ".join(f"b{s}: {r:,.0f}/s" for s, r, _ in rows), flush=True)
    print("gateway ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_gateway(args.models, args.modes, args.connections, args.duration, Path(tmp))
    saved = {"runs": [vars(run) for run in runs], "ceilings": ceilings}
    (args.output / "serving.json").write_text(json.dumps(saved, indent=1))
    write_results(runs, ceilings, args.output)


def write_results(
    runs: list[Run], ceilings: dict[str, list[tuple[int, float, float]]], output: Path
) -> None:
    table = markdown(runs, ceilings)
    (output / "serving.md").write_text(table)
    plot(runs, ceilings, output / "serving.png")
    print()
    print(table)
    print(f"written: {output / 'serving.md'}, {output / 'serving.png'}")


if __name__ == "__main__":
    main()
