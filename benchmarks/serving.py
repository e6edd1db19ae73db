"""The serving benchmark: dynamic batching against the ceilings and the floor, in one run.

For each model (default digits, votes, sentiment; add resnet50 when exported):
1. the in-process ceiling: the SavedModel's signature called directly at batch sizes 1..64;
2. the gateway, driven by `wrk` at 1, 16 and 64 connections, one instance per request through
   `POST /v1/models/{m}:predict`, in three modes, each a fresh `modelserve serve` process:
   - `batched`: dynamic batching as configured by default;
   - `naive`:   `batching.enabled: false`, one model call per request (the floor);
   - `echo`:    the same JSON parsing, validation and batching, answers without inference
                (the HTTP/JSON ceiling; `MODELSERVE_ECHO=true`);
3. Triton as a peer, in the same run: the same SavedModels behind PyTriton's bundled Triton
   server (CPU, its dynamic batcher on; benchmarks/triton_peer.py, its own process under its
   own interpreter, see below), driven by `wrk` with the same instance as a V2 request,
   `POST /v2/models/{m}/infer`, at the same connection counts; its answer is checked against
   the model called in-process first;
4. prints one table (req/s, p50, p99, mean batch size) and the modelserve/Triton req/s ratios,
   writes them as markdown and a PNG plot.

Run from the repository root, with modelserve's venv:
    python benchmarks/serving.py [--duration 10] [--models digits votes]
Needs `wrk` (Debian: apt install wrk).

The Triton peer runs in a venv of its own, never modelserve's: nvidia-pytriton 0.7 requires
numpy<2 (its Triton stub is built against numpy 1) while modelserve runs on numpy 2. Create it
once with `scripts/triton-venv.sh` (.venv-triton in the repository root: tensorflow-cpu,
nvidia-pytriton, numpy 1.26); the peer is started with `--triton-python PATH`, by default
.venv-triton/bin/python. Without that interpreter Triton is skipped with a line saying how to
create it; `--no-triton` skips it on purpose.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
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
TRITON = "triton"  # the mode of the Triton peer's runs
TRITON_PEER = ROOT / "benchmarks" / "triton_peer.py"
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"  # made by scripts/triton-venv.sh
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end
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


def _tail(path: str, lines: int = 30) -> str:
    """The end of a server's log (its folder is temporary: gone once the benchmark stops)."""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def server_process(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    ready_urls: Sequence[str],
    workdir: Path,
) -> Iterator[None]:
    """Runs `command` (in its own process group) until every URL in `ready_urls` answers 200,
    in order; stops the group on exit."""
    log = (workdir / f"{name}.log").open("w")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        for url in ready_urls:
            while not answers_200(url):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} server exited:\n{_tail(log.name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} server not ready in 300 s:\n{_tail(log.name)}")
                time.sleep(0.5)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        with suppress(ProcessLookupError):  # children left behind (Triton's server and stubs)
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


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
    url = f"http://127.0.0.1:{port}"
    with server_process(mode, command, env, [f"{url}/readyz"], workdir):
        yield url


@contextmanager
def triton(python: Path, models: list[str], workdir: Path) -> Iterator[str]:
    """The Triton peer (benchmarks/triton_peer.py) serving `models`, run by the interpreter
    `python` (the Triton venv's); yields its base URL once the server and every model are
    ready."""
    port = free_port()
    command = [str(python), str(TRITON_PEER), "--port", str(port), "--models", *models]
    # Triton's Python backend stub links libpython: the loader must find the peer's
    # interpreter's (the peer sets it too, when started by hand), not this one's.
    libdir = interpreter_libdir(python)
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
        ),
    }
    url = f"http://127.0.0.1:{port}"
    ready = [f"{url}/v2/health/ready", *(f"{url}/v2/models/{m}/ready" for m in models)]
    with server_process(TRITON, command, env, ready, workdir):
        yield url


def interpreter_libdir(python: Path) -> str:
    """The LIBDIR (where its libpython lies) of the interpreter `python`."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def triton_unavailable(python: Path | None) -> str | None:
    """Why the Triton peer cannot run with the interpreter `python` (None: the default,
    .venv-triton/bin/python, does not exist), or None."""
    if python is None:
        return (
            f"no Triton venv ({TRITON_PYTHON.relative_to(ROOT)} not found): create it with "
            "scripts/triton-venv.sh, or pass --triton-python PATH"
        )
    if not os.access(python, os.X_OK):
        venv = python.parent.parent if python.parent.name == "bin" else Path("DIR")
        return (
            f"--triton-python {python} is not an executable: create the venv with "
            f"scripts/triton-venv.sh {venv}"
        )
    check = subprocess.run(
        [str(python), "-c", "import pytriton.triton, tensorflow"], capture_output=True, text=True
    )
    if check.returncode != 0:  # e.g. modelserve's own venv: never install PyTriton there
        error = (check.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"--triton-python {python} cannot run the peer ({error}): pass the python of a "
            "venv of its own, made by scripts/triton-venv.sh"
        )
    return None


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


def triton_batch_counters(url: str, model: str) -> tuple[int, int]:
    """(rows, batches) Triton ran for the model so far."""
    stats = httpx.get(f"{url}/v2/models/{model}/stats", timeout=10).json()["model_stats"]
    return (
        sum(s["inference_count"] for s in stats),
        sum(s["execution_count"] for s in stats),
    )


def v2_request(url: str, model: str) -> tuple[bytes, dict[str, str]]:
    """The benchmark's instance as one V2 inference request (body, extra headers), shaped as
    Triton declares the model's input. Strings travel as JSON text; bytes that are not UTF-8
    (resnet50's JPEG) in the binary tensor extension."""
    instances = request_body(model)["instances"]
    (declared,) = httpx.get(f"{url}/v2/models/{model}", timeout=10).json()["inputs"]
    tensor: dict[str, Any] = {"name": declared["name"], "datatype": declared["datatype"]}
    if declared["datatype"] != "BYTES":
        values = np.asarray(instances)  # the JSON values modelserve parses, unchanged
        tensor |= {"shape": padded_shape(values.shape, declared), "data": values.ravel().tolist()}
        return json.dumps({"inputs": [tensor]}).encode(), {}
    strings = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode() for v in instances]
    tensor["shape"] = padded_shape((len(strings),), declared)
    try:
        tensor["data"] = [s.decode() for s in strings]
        return json.dumps({"inputs": [tensor]}).encode(), {}
    except UnicodeDecodeError:
        raw = b"".join(len(s).to_bytes(4, "little") + s for s in strings)
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"inputs": [tensor]}).encode()
        return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def padded_shape(shape: tuple[int, ...], declared: dict[str, Any]) -> list[int]:
    """`shape` with trailing 1s up to the declared rank (a scalar per row is declared [1])."""
    return [*shape, *[1] * (len(declared["shape"]) - len(shape))]


def check_triton(url: str, model: str, body: bytes, headers: dict[str, str]) -> None:
    """Triton's answer to the benchmark's request must match the model called in-process."""
    response = httpx.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"Triton {model}: {response.status_code} {response.text[:300]}")
    loaded, inputs = in_process_model(model)
    expected = loaded.call_tensors("serving_default", inputs)
    for output in response.json()["outputs"]:
        got = np.asarray(output["data"], dtype=np.float64)
        want = expected[output["name"]].numpy().astype(np.float64).ravel()
        if not (np.allclose(got, want, rtol=1e-3, atol=1e-4) and got.argmax() == want.argmax()):
            raise RuntimeError(f"Triton {model} {output['name']}: {got[:8]} != {want[:8]}")


def drive(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    workdir: Path,
    headers: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """`wrk` POSTing `body` to `url` for `seconds` over `connections` connections."""
    body_file = workdir / "body"
    body_file.write_bytes(body)
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
        url,
    ]
    header_lines = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(body_file), "BENCH_HEADERS": header_lines},
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    requests, duration_us, errors, non2xx, p50_us, p99_us = map(int, line.split()[1:])
    return {
        "rps": requests / (duration_us / 1e6),
        "p50": p50_us / 1000,
        "p99": p99_us / 1000,
        "errors": errors + non2xx,
    }


@dataclass
class Endpoint:
    """What `wrk` drives for one model on one server, and the server's batch counters."""

    url: str
    body: bytes
    headers: dict[str, str]
    counters: Callable[[], tuple[int, int]]  # (rows, batches) run so far


def measure(
    model: str, mode: str, connections: int, endpoint: Endpoint, seconds: float, workdir: Path
) -> Run:
    """One timed `wrk` run after a 1 s warm-up, with the mean batch size the server ran."""

    def run_wrk(duration: float) -> dict[str, float]:
        return drive(endpoint.url, endpoint.body, connections, duration, workdir, endpoint.headers)

    run_wrk(1)  # warm the connection path
    rows0, batches0 = endpoint.counters()
    result = run_wrk(seconds)
    rows1, batches1 = endpoint.counters()
    run = Run(
        model,
        mode,
        connections,
        result["rps"],
        result["p50"],
        result["p99"],
        int(result["errors"]),
        (rows1 - rows0) / max(1, batches1 - batches0),
    )
    print(
        f"  {mode:8} {model:10} c={connections:<3} {run.requests_per_second:8.0f} req/s  "
        f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
        f"batch {run.mean_batch:5.2f}  errors {run.errors}",
        flush=True,
    )
    return run


def run_gateway(
    models: list[str], modes: list[str], connections: list[int], seconds: float, workdir: Path
) -> list[Run]:
    runs = []
    for mode in modes:
        with gateway(mode, models, workdir) as url:
            for model in models:
                endpoint = Endpoint(
                    f"{url}/v1/models/{model}:predict",
                    json.dumps(request_body(model)).encode(),
                    {},
                    partial(batch_counters, url, model),
                )
                runs += [measure(model, mode, c, endpoint, seconds, workdir) for c in connections]
    return runs


def run_triton(
    python: Path, models: list[str], connections: list[int], seconds: float, workdir: Path
) -> list[Run]:
    runs = []
    with triton(python, models, workdir) as url:
        for model in models:
            body, headers = v2_request(url, model)
            check_triton(url, model, body, headers)
            endpoint = Endpoint(
                f"{url}/v2/models/{model}/infer",
                body,
                headers,
                partial(triton_batch_counters, url, model),
            )
            runs += [measure(model, TRITON, c, endpoint, seconds, workdir) for c in connections]
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
    ratios = []
    top = max(r.connections for r in runs)
    for model in dict.fromkeys(r.model for r in runs):
        by_mode = {r.mode: r for r in runs if r.model == model and r.connections == top}
        if not set(MODES) <= set(by_mode):
            continue
        b, n, e = by_mode["batched"], by_mode["naive"], by_mode["echo"]
        ratios.append(
            f"| {model} | {b.requests_per_second / n.requests_per_second:.2f}x | "
            f"{b.requests_per_second / e.requests_per_second:.0%} | "
            f"{b.p99_ms:.1f} vs {n.p99_ms:.1f} |"
        )
    lines += _section(
        "Ratios at the highest concurrency",
        ["| model | batched / naive | batched / echo | p99 batched vs naive (ms) |"],
        "| --- | ---: | ---: | --- |",
        ratios,
    )
    lines += triton_ratios(runs)
    low = min(r.connections for r in runs)
    differences = []
    for model in dict.fromkeys(r.model for r in runs):
        by_mode = {r.mode: r for r in runs if r.model == model and r.connections == low}
        if {"batched", "naive"} <= set(by_mode):
            difference = by_mode["batched"].p50_ms - by_mode["naive"].p50_ms
            differences.append(f"- {model}: {difference:+.2f} ms")
    lines += _section(f"At {low} connection(s): p50 batched - naive", [], None, differences)
    ceiling_rows = [
        f"| {model} | {size} | {rate:,.0f} | {ms:.2f} |"
        for model, rows in ceilings.items()
        for size, rate, ms in rows
    ]
    lines += _section(
        "In-process ceiling (signature called directly)",
        ["| model | batch | samples/s | ms per call |"],
        "| --- | ---: | ---: | ---: |",
        ceiling_rows,
    )
    return "\n".join(lines) + "\n"


def _section(title: str, header: list[str], rule: str | None, rows: list[str]) -> list[str]:
    """A markdown section, or nothing when it has no rows (a mode or the ceiling not run)."""
    if not rows:
        return []
    return ["", f"## {title}", "", *header, *([rule] if rule else []), *rows]


def triton_ratios(runs: list[Run]) -> list[str]:
    """A table of modelserve req/s over Triton's, per model and connection count (the modes
    measured), or nothing when Triton was not measured."""
    triton_runs = {(r.model, r.connections): r for r in runs if r.mode == TRITON}
    if not triton_runs:
        return []
    modes = [m for m in MODES if any(r.mode == m for r in runs)]
    lines = [
        "",
        "## modelserve / Triton (req/s, same run)",
        "",
        "| "
        + " | ".join(["model", "connections", "Triton req/s", *(f"{m} / Triton" for m in modes)])
        + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(modes),
    ]
    for (model, conns), t in triton_runs.items():
        by_mode = {r.mode: r for r in runs if r.model == model and r.connections == conns}
        ratios = [
            f"{by_mode[m].requests_per_second / t.requests_per_second:.2f}x"
            if m in by_mode
            else "-"
            for m in modes
        ]
        lines.append(
            f"| {model} | {conns} | {t.requests_per_second:,.0f} | " + " | ".join(ratios) + " |"
        )
    return lines


def plot(runs: list[Run], ceilings: dict[str, list[tuple[int, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in runs))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for mode, style in zip((*MODES, TRITON), ("o-", "s--", "^:", "d-."), strict=True):
            points = sorted(
                (r.connections, r.requests_per_second)
                for r in runs
                if r.model == model and r.mode == mode
            )
            if points:
                label = "Triton (PyTriton, dynamic batching)" if mode == TRITON else mode
                ax.plot(*zip(*points, strict=True), style, label=label)
        best = max((rate for _, rate, _ in ceilings.get(model, [])), default=0.0)
        if best:
            ax.axhline(best, color="grey", lw=0.8, label="in-process ceiling")
        ax.set(title=model, xlabel="connections", ylabel="requests/s", xscale="log", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("modelserve: dynamic batching vs naive, the echo ceiling and Triton")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["digits", "votes", "sentiment"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton peer")
    parser.add_argument(
        "--triton-python",
        type=Path,
        default=TRITON_PYTHON if TRITON_PYTHON.exists() else None,
        metavar="PATH",
        help="the interpreter of the Triton peer's venv (scripts/triton-venv.sh; default: "
        f"{TRITON_PYTHON.relative_to(ROOT)} when it exists)",
    )
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
    skip_triton = "--no-triton" if args.no_triton else triton_unavailable(args.triton_python)
    if skip_triton:
        print(f"Triton peer skipped: {skip_triton}", flush=True)
    ceilings: dict[str, list[tuple[int, float, float]]] = {}
    if not args.no_ceiling:
        print("in-process ceiling ...", flush=True)
        ceilings = {m: in_process_ceiling(m, [1, 2, 4, 8, 16, 32, 64], 1.0) for m in args.models}
    for model, rows in ceilings.items():
        print(f"  {model:10} " + "  ".join(f"b{s}: {r:,.0f}/s" for s, r, _ in rows), flush=True)
    print("gateway ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_gateway(args.models, args.modes, args.connections, args.duration, Path(tmp))
        if not skip_triton:
            print(f"Triton peer ({args.triton_python}) ...", flush=True)
            runs += run_triton(
                args.triton_python, args.models, args.connections, args.duration, Path(tmp)
            )
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
