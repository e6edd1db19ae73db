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
4. prints one table (req/s, p50, p99, mean batch size, the server's CPU and memory) and the
   modelserve/Triton req/s ratios, writes them as markdown and a PNG plot.

With `--workers N [N ...]` every modelserve mode runs once per worker count, each on a server
started with `--workers N` (0: one process does everything; N >= 1: N front-end workers around
one model process); rows are labelled e.g. "batched w=2". Each run also records the batch-size
histogram the model process ran (`modelserve_batch_size` in /metrics, the difference over the
run), the CPU the server used (the sum over the supervisor and all its children, in % of one
core) and each process's RSS after the run (shared-memory arenas apart). The results then go
to serving_workers.{md,json,png} (`--name` to change), the PNG with the scaling curve (req/s
against workers at the highest connection count, Triton as a line) and the batch-size
histograms of one model per worker count.

Run from the repository root, with modelserve's venv:
    python benchmarks/serving.py [--duration 10] [--models digits votes] [--workers 0 1 2]
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
import datetime
import itertools
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
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
BINARY_HEADER = "Inference-Header-Content-Length"  # V2's binary tensor extension
PROTOCOL_SUFFIX = {"v1": "", "v2": " V2", "v2bin": " V2 binary"}
TRITON = "triton"  # the mode of the Triton peer's runs
TRITON_PEER = ROOT / "benchmarks" / "triton_peer.py"
MAX_BATCH_SIZE = {"resnet50": 32}  # both sides, as benchmarks/triton_peer.py configures Triton
DEFAULT_MAX_BATCH_SIZE = 128
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
local think = tonumber(os.getenv("BENCH_THINK_MS") or "0")
if think > 0 then  -- clients that pause 0 to 2x think ms before each next request
  delay = function() return math.random(0, math.floor(2 * think)) end
end
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
    workers: int | None = None  # modelserve's --workers (None: its default; Triton)
    cpu_percent: dict[str, float] = field(default_factory=dict)  # by role, and "total"
    # by role, one per process: the RSS without shared-memory pages (the workers' arenas, in
    # the RSS of a worker and of the model process alike), which are in shared_mb
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    shared_mb: dict[str, list[float]] = field(default_factory=dict)
    batch_histogram: dict[str, int] = field(default_factory=dict)  # bin's largest size: batches
    wrk_cpu_percent: float = 0.0  # the load generator's, on the same CPUs
    # "v1": TF Serving REST :predict; "v2": V2 infer, Triton's very body (JSON tensors);
    # "v2bin": the same with binary tensors both ways (binary tensor data extension)
    protocol: str = "v1"

    @property
    def label(self) -> str:
        """The mode, with the worker count when one was given and the protocol when it is V2
        ("batched w=2 V2")."""
        workers = "" if self.workers is None else f" w={self.workers}"
        return f"{self.mode}{workers}{self._protocol_suffix}"

    @property
    def variant(self) -> str:
        """The mode and, when V2, the protocol ("batched V2"): a line across worker counts."""
        return f"{self.mode}{self._protocol_suffix}"

    @property
    def _protocol_suffix(self) -> str:
        """ " V2" / " V2 binary" for modelserve's V2 runs; Triton's are all V2 (no mark but
        " binary")."""
        suffix = PROTOCOL_SUFFIX[self.protocol]
        return suffix.removeprefix(" V2") if self.mode == TRITON else suffix

    @property
    def wire(self) -> str:
        """The Triton protocol this run compares with: binary tensors or JSON."""
        return "v2bin" if self.protocol == "v2bin" else "v2"


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
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` (in its own process group) until every URL in `ready_urls` answers 200,
    in order, and yields its process; stops the group on exit."""
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
        yield process
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


@dataclass(frozen=True)
class Server:
    url: str
    pid: int  # `modelserve serve` (with workers, the supervisor), or the Triton peer
    port: int


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
    with gateway_server(mode, models, workdir, config=config, extra_args=extra_args) as server:
        yield server.url


def batching_for(mode: str, model: str) -> dict[str, Any]:
    """Off for the naive floor; else batches as large as the Triton peer's (its max batch size
    per model), so neither side is capped lower than the other, with the batching keys the
    repository's serving config ships for the model."""
    if mode == "naive":
        return {"enabled": False}
    size = MAX_BATCH_SIZE.get(model, DEFAULT_MAX_BATCH_SIZE)
    return {**shipped_batching(model), "max_batch_size": size}


def shipped_batching(model: str) -> dict[str, Any]:
    """The batching keys of `model`'s entry in models/serving.yaml (none if it has none)."""
    import yaml

    shipped = yaml.safe_load((MODELS / "serving.yaml").read_text())
    entry: dict[str, Any] = next((m for m in shipped["models"] if m["name"] == model), {})
    return dict(entry.get("batching") or {})


@contextmanager
def gateway_server(
    mode: str,
    models: list[str],
    workdir: Path,
    *,
    config: dict[str, Any] | None = None,
    extra_args: Sequence[str] = ("--grpc-port", "0"),
    workers: int | None = None,
) -> Iterator[Server]:
    """`gateway`, started with `--workers workers` unless None (the server's default)."""
    config = config or {
        "models": [
            {"name": m, "base_path": str(MODELS / m), "batching": batching_for(mode, m)}
            for m in models
        ]
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
        *(["--workers", str(workers)] if workers is not None else []),
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process(mode, command, env, [f"{url}/readyz"], workdir) as process:
        yield Server(url, process.pid, port)


@contextmanager
def triton(
    python: Path,
    models: list[str],
    workdir: Path,
    *,
    grpc_port: int | None = None,
    model_dir: Path | None = None,
) -> Iterator[Server]:
    """The Triton peer (benchmarks/triton_peer.py) serving `models`, run by the interpreter
    `python` (the Triton venv's), once the server and every model are ready; with `grpc_port`
    its gRPC service too; the models from `model_dir` (a model repository) instead of models/."""
    port = free_port()
    command = [str(python), str(TRITON_PEER), "--port", str(port), "--models", *models]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
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
    with server_process(TRITON, command, env, ready, workdir) as process:
        yield Server(url, process.pid, port)


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


def batch_size_buckets(url: str, model: str) -> dict[int, int]:
    """Batches the server ran for the model so far, cumulative at each bucket's largest size
    (modelserve's allowed batch sizes: 1, 2, 4, ...; the `modelserve_batch_size` histogram)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    buckets: dict[int, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "modelserve_batch_size":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("model") == model:
                le = sample.labels["le"]
                size = 1 << 30 if le == "+Inf" else int(float(le))
                buckets[size] = buckets.get(size, 0) + int(sample.value)
    return buckets


def triton_batch_size_buckets(url: str, model: str) -> dict[int, int]:
    """`batch_size_buckets` of Triton, from its batch statistics (exact sizes, binned at the
    powers of 2)."""
    stats = httpx.get(f"{url}/v2/models/{model}/stats", timeout=10).json()["model_stats"]
    sizes = [
        (b["batch_size"], b["compute_infer"]["count"]) for s in stats for b in s["batch_stats"]
    ]
    bounds = [1 << i for i in range(11)]
    return {bound: sum(c for size, c in sizes if size <= bound) for bound in bounds}


def histogram_difference(before: dict[int, int], after: dict[int, int]) -> dict[str, int]:
    """Batches run between two `batch_size_buckets`, per bin (its largest size: batches of
    more rows than the bin before), empty bins above the largest left out."""
    cumulative = [(size, after[size] - before.get(size, 0)) for size in sorted(after)]
    if cumulative and cumulative[-1][0] == 1 << 30:  # +Inf: never more than the largest size
        cumulative.pop()
    bins = {}
    below = 0
    for size, count in cumulative:
        bins[str(size)] = count - below
        below = count
    while bins and not bins[next(reversed(bins))]:
        bins.popitem()
    return bins


class ServerProcesses:
    """CPU time and memory of a server: its process and all of that one's descendants, each
    with its role. modelserve with workers: "supervisor", "model", "worker" (the children
    listening on the REST port), "helper" (the resource tracker, process pools of a worker);
    a single process, or the Triton peer: "server" (Triton's own processes: "helper")."""

    def __init__(self, server: Server, modelserve: bool) -> None:
        import psutil

        self.root = psutil.Process(server.pid)
        self.port = server.port if modelserve else None
        self._known: dict[int, psutil.Process] = {}

    def roles(self) -> dict[int, tuple[str, Any]]:
        """pid: (role, psutil.Process) of every process of the server now."""
        import psutil

        roles: dict[int, tuple[str, Any]] = {}
        with suppress(psutil.Error):
            children = self.root.children()
            for child in self.root.children(recursive=True):
                # the same Process object each time: its cpu_times() keeps meaning this process
                process = self._known.setdefault(child.pid, child)
                roles[child.pid] = (self._role(process, children), process)
        if any(role == "worker" for role, _ in roles.values()):
            roles[self.root.pid] = ("supervisor", self.root)
        else:  # one process: its children help it (Triton's server among them)
            roles = {pid: ("helper", process) for pid, (_, process) in roles.items()}
            roles[self.root.pid] = ("server", self.root)
        return roles

    def _role(self, process: Any, children: list[Any]) -> str:
        import psutil

        if process not in children:
            return "helper"
        try:
            if "resource_tracker" in " ".join(process.cmdline()):
                return "helper"
            listening = any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                for c in process.net_connections(kind="tcp")
            )
        except psutil.Error:
            return "helper"
        return "worker" if listening else "model"

    def cpu_seconds(self) -> dict[int, float]:
        """User and system CPU seconds of each process so far."""
        import psutil

        seconds = {}
        for pid, (_, process) in self.roles().items():
            with suppress(psutil.Error):
                times = process.cpu_times()
                seconds[pid] = times.user + times.system
        return seconds

    def usage(
        self, before: dict[int, float], elapsed: float
    ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[float]]]:
        """CPU % (of one core) since `before` (`cpu_seconds`, `elapsed` seconds ago) by role
        and in total, and the RSS without shared memory and the shared memory (MB) of each
        process now, by role."""
        import psutil

        after = self.cpu_seconds()
        cpu: dict[str, float] = {"total": 0.0}
        rss: dict[str, list[float]] = {}
        shared: dict[str, list[float]] = {}
        for pid, (role, process) in sorted(self.roles().items()):
            percent = (after.get(pid, 0.0) - before.get(pid, 0.0)) / elapsed * 100
            cpu["total"] += percent
            cpu[role] = cpu.get(role, 0.0) + percent
            with suppress(psutil.Error, OSError):
                shmem = shared_memory_mb(pid)
                rss.setdefault(role, []).append(process.memory_info().rss / 2**20 - shmem)
                shared.setdefault(role, []).append(shmem)
        return cpu, rss, shared


def shared_memory_mb(pid: int) -> float:
    """The process's resident shared-memory pages (RssShmem: memfd arenas, /dev/shm), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) / 1024
    return 0.0


def v2_request(url: str, model: str, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """The benchmark's instance as one V2 inference request (body, extra headers), shaped as
    Triton declares the model's input. Strings travel as JSON text; bytes that are not UTF-8
    (resnet50's JPEG) in the binary tensor extension. `binary`: numbers as binary tensors too,
    and the outputs asked for as binary."""
    from service.core.decoding import object_array
    from service.core.dtypes import BY_V2_NAME
    from service.v2 import raw_tensors

    instances = request_body(model)["instances"]
    (declared,) = httpx.get(f"{url}/v2/models/{model}", timeout=10).json()["inputs"]
    tensor: dict[str, Any] = {"name": declared["name"], "datatype": declared["datatype"]}
    if declared["datatype"] != "BYTES":
        values = np.asarray(instances)  # the JSON values modelserve parses, unchanged
        tensor["shape"] = padded_shape(values.shape, declared)
        if not binary:
            tensor["data"] = values.ravel().tolist()
            return json.dumps({"inputs": [tensor]}).encode(), {}
        raw = raw_tensors.encode(values.astype(BY_V2_NAME[declared["datatype"]].numpy))
        tensor["parameters"] = {"binary_data_size": len(raw)}
        document = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
        header = json.dumps(document).encode()
        return header + raw, {BINARY_HEADER: str(len(header))}
    strings = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode() for v in instances]
    tensor["shape"] = padded_shape((len(strings),), declared)
    try:
        tensor["data"] = [s.decode() for s in strings]
        return json.dumps({"inputs": [tensor]}).encode(), {}
    except UnicodeDecodeError:
        raw = raw_tensors.encode(object_array(strings))
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"inputs": [tensor]}).encode()
        return header + raw, {BINARY_HEADER: str(len(header))}


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
    think_ms: float = 0,
) -> dict[str, float]:
    """`wrk` POSTing `body` to `url` for `seconds` over `connections` connections, each
    pausing a random 0 to 2 x `think_ms` before its next request (0: none, closed loop)."""
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
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "BENCH_BODY": str(body_file),
            "BENCH_HEADERS": header_lines,
            "BENCH_THINK_MS": str(think_ms),
        },
    ).stdout
    after, elapsed = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - start
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    requests, duration_us, errors, non2xx, p50_us, p99_us = map(int, line.split()[1:])
    return {
        "rps": requests / (duration_us / 1e6),
        "p50": p50_us / 1000,
        "p99": p99_us / 1000,
        "errors": errors + non2xx,
        "wrk_cpu": cpu / elapsed * 100,
    }


@dataclass
class Endpoint:
    """What `wrk` drives for one model on one server, and the server's batch counters."""

    url: str
    body: bytes
    headers: dict[str, str]
    counters: Callable[[], tuple[int, int]]  # (rows, batches) run so far
    buckets: Callable[[], dict[int, int]]  # batch_size_buckets so far
    processes: ServerProcesses


def measure(run: Run, endpoint: Endpoint, seconds: float, workdir: Path) -> Run:
    """One timed `wrk` run after a 1 s warm-up (`run` says which, and gets the results), with
    the batches the server ran and its CPU over the run, and its memory after it."""

    def run_wrk(duration: float) -> dict[str, float]:
        return drive(
            endpoint.url, endpoint.body, run.connections, duration, workdir, endpoint.headers
        )

    run_wrk(1)  # warm the connection path
    rows0, batches0 = endpoint.counters()
    buckets0 = endpoint.buckets()
    cpu0, start = endpoint.processes.cpu_seconds(), time.monotonic()
    result = run_wrk(seconds)
    run.cpu_percent, run.rss_mb, run.shared_mb = endpoint.processes.usage(
        cpu0, time.monotonic() - start
    )
    rows1, batches1 = endpoint.counters()
    run.batch_histogram = histogram_difference(buckets0, endpoint.buckets())
    run.requests_per_second, run.p50_ms, run.p99_ms = result["rps"], result["p50"], result["p99"]
    run.errors = int(result["errors"])
    run.wrk_cpu_percent = result["wrk_cpu"]
    run.mean_batch = (rows1 - rows0) / max(1, batches1 - batches0)
    print(
        f"  {run.label:12} {run.model:10} c={run.connections:<3} "
        f"{run.requests_per_second:8.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
        f"p99 {run.p99_ms:7.2f} ms  batch {run.mean_batch:5.2f}  "
        f"CPU {cpu_text(run)}  wrk {run.wrk_cpu_percent:.0f}  RSS {rss_text(run)} MB  "
        f"errors {run.errors}",
        flush=True,
    )
    return run


def cpu_text(run: Run) -> str:
    """The server's CPU % over the run, with the model process's and the workers' share."""
    return cpu_shares_text(run.cpu_percent)


def cpu_shares_text(cpu: dict[str, float]) -> str:
    """`cpu_text` of a `ServerProcesses.usage` CPU dict."""
    if not cpu:
        return "-"
    if "worker" not in cpu:
        return f"{cpu['total']:.0f}"
    return f"{cpu['total']:.0f} (model {cpu.get('model', 0):.0f}, workers {cpu['worker']:.0f})"


def rss_text(run: Run) -> str:
    """The RSS (MB) of the server's process, or with workers of the model process, each worker
    and the supervisor; with helper processes, their sum; then the shared memory (the arenas)
    resident in each worker, which the model process maps too."""
    rss = run.rss_mb
    if not rss:
        return "-"
    parts = [f"{sum(rss['server']):.0f}"] if "server" in rss else []
    if "worker" in rss:
        workers = "/".join(f"{mb:.0f}" for mb in rss["worker"])
        parts += [
            f"model {sum(rss.get('model', [])):.0f}",
            f"workers {workers}",
            f"supervisor {sum(rss['supervisor']):.0f}",
        ]
    if rss.get("helper"):
        parts.append(f"helpers {sum(rss['helper']):.0f}")
    arenas = run.shared_mb.get("worker")
    if arenas:
        parts.append("arenas " + "/".join(f"{mb:.0f}" for mb in arenas) + " shared")
    return ", ".join(parts)


def run_gateway(
    models: list[str],
    modes: list[str],
    connections: list[int],
    seconds: float,
    workdir: Path,
    workers: Sequence[int | None] = (None,),
    protocols: Sequence[str] = ("v1",),
) -> list[Run]:
    """Each mode on a server of its own, once per worker count (None: the server's default),
    each model through each protocol."""
    runs = []
    for count in workers:
        for mode in modes:
            with gateway_server(mode, models, workdir, workers=count) as server:
                processes = ServerProcesses(server, modelserve=True)
                for model, protocol in itertools.product(models, protocols):
                    url, body, headers = gateway_request(server.url, model, protocol)
                    endpoint = Endpoint(
                        url,
                        body,
                        headers,
                        partial(batch_counters, server.url, model),
                        partial(batch_size_buckets, server.url, model),
                        processes,
                    )
                    for c in connections:
                        run = Run(model, mode, c, 0, 0, 0, 0, 0, workers=count, protocol=protocol)
                        runs.append(measure(run, endpoint, seconds, workdir))
    return runs


def gateway_request(url: str, model: str, protocol: str) -> tuple[str, bytes, dict[str, str]]:
    """The benchmark's instance for modelserve: a TF Serving predict body (v1), or the V2
    request Triton is sent, byte for byte (v2)."""
    if protocol == "v1":
        return f"{url}/v1/models/{model}:predict", json.dumps(request_body(model)).encode(), {}
    body, headers = v2_request(url, model, binary=protocol == "v2bin")
    return f"{url}/v2/models/{model}/infer", body, headers


def run_triton(
    python: Path,
    models: list[str],
    connections: list[int],
    seconds: float,
    workdir: Path,
    wires: Sequence[str] = ("v2",),
) -> list[Run]:
    """Triton through each wire format modelserve's runs use: V2 JSON ("v2") and/or binary
    tensors ("v2bin")."""
    runs = []
    with triton(python, models, workdir) as server:
        processes = ServerProcesses(server, modelserve=False)
        for model, wire in itertools.product(models, wires):
            check_triton(server.url, model, *v2_request(server.url, model))
            body, headers = v2_request(server.url, model, binary=wire == "v2bin")
            endpoint = Endpoint(
                f"{server.url}/v2/models/{model}/infer",
                body,
                headers,
                partial(triton_batch_counters, server.url, model),
                partial(triton_batch_size_buckets, server.url, model),
                processes,
            )
            for c in connections:
                run = Run(model, TRITON, c, 0, 0, 0, 0, 0, protocol=wire)
                runs.append(measure(run, endpoint, seconds, workdir))
    return runs


def markdown(
    runs: list[Run],
    ceilings: dict[str, list[tuple[int, float, float]]],
    provenance: list[str] | None = None,
) -> str:
    lines = [*(provenance or []), *([""] if provenance else [])]
    lines += [
        "## Gateway (wrk, one instance per request)",
        "",
        "CPU: the server's user + system time over the run in % of one core, summed over all "
        "its processes (with workers: the model process's and the workers' shares); RSS after "
        "the run, without shared-memory pages: the arenas that carry tensors between a worker "
        "and the model process (up to `MODELSERVE_ARENA_BYTES` each way) are resident in both, "
        "and listed apart as `arenas ... shared`; wrk's CPU likewise (it runs on the same CPUs). "
        "w=N: `--workers N` (w=0: one process does everything).",
        "",
        "| model | connections | mode | req/s | p50 ms | p99 ms | mean batch | CPU % "
        "| wrk CPU % | RSS MB | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.model} | {r.connections} | {r.label} | {r.requests_per_second:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.mean_batch:.2f} | {cpu_text(r)} | "
            f"{r.wrk_cpu_percent:.0f} | {rss_text(r)} | {r.errors} |"
        )
    lines += scaling(runs)
    ratios = []
    top = max(r.connections for r in runs)
    for model, workers in dict.fromkeys((r.model, r.workers) for r in runs if r.mode != TRITON):
        by_mode = {r.mode: r for r in same(runs, model, top, workers) if r.protocol == "v1"}
        if not set(MODES) <= set(by_mode):
            continue
        b, n, e = by_mode["batched"], by_mode["naive"], by_mode["echo"]
        ratios.append(
            f"| {model} | {b.label} | {b.requests_per_second / n.requests_per_second:.2f}x | "
            f"{b.requests_per_second / e.requests_per_second:.0%} | "
            f"{b.p99_ms:.1f} vs {n.p99_ms:.1f} |"
        )
    lines += _section(
        "Ratios at the highest concurrency",
        ["| model | run | batched / naive | batched / echo | p99 batched vs naive (ms) |"],
        "| --- | --- | ---: | ---: | --- |",
        ratios,
    )
    lines += triton_ratios(runs)
    lines += histograms(runs)
    low = min(r.connections for r in runs)
    differences = []
    for model, workers in dict.fromkeys((r.model, r.workers) for r in runs if r.mode != TRITON):
        by_mode = {r.mode: r for r in same(runs, model, low, workers)}
        if {"batched", "naive"} <= set(by_mode):
            difference = by_mode["batched"].p50_ms - by_mode["naive"].p50_ms
            where = "" if workers is None else f" w={workers}"
            differences.append(f"- {model}{where}: {difference:+.2f} ms")
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


def same(runs: list[Run], model: str, connections: int, workers: int | None) -> list[Run]:
    """modelserve's runs of the model at that connection and worker count."""
    return [
        r
        for r in runs
        if (r.model, r.connections, r.workers) == (model, connections, workers) and r.mode != TRITON
    ]


def worker_counts(runs: list[Run]) -> list[int]:
    return sorted({r.workers for r in runs if r.workers is not None})


def scaling(runs: list[Run]) -> list[str]:
    """req/s and mean batch size per worker count (columns), per model, connection count and
    mode, with Triton's; nothing unless several worker counts ran."""
    counts = worker_counts(runs)
    if len(counts) < 2:
        return []
    triton_runs = {(r.model, r.connections, r.wire): r for r in runs if r.mode == TRITON}
    rows = []
    for model, conns, mode in dict.fromkeys(
        (r.model, r.connections, r.variant) for r in runs if r.workers is not None
    ):
        by_workers = {
            r.workers: r
            for r in runs
            if (r.model, r.connections, r.variant) == (model, conns, mode)
        }
        cells = [
            f"{by_workers[n].requests_per_second:,.0f} ({by_workers[n].mean_batch:.1f})"
            if n in by_workers
            else "-"
            for n in counts
        ]
        wire = next(iter(by_workers.values())).wire
        t = triton_runs.get((model, conns, wire))
        triton = f"{t.requests_per_second:,.0f} ({t.mean_batch:.1f})" if t else "-"
        rows.append(f"| {model} | {conns} | {mode} | " + " | ".join([*cells, triton]) + " |")
    return _section(
        "Scaling with workers: req/s (mean batch size)",
        [
            "| model | connections | mode | "
            + " | ".join([*(f"w={n}" for n in counts), "Triton"])
            + " |"
        ],
        "| --- | ---: | --- |" + " ---: |" * (len(counts) + 1),
        rows,
    )


def histograms(runs: list[Run]) -> list[str]:
    """The batch-size histogram of each run at the highest connection count: % of its batches
    per bin of sizes."""
    top = max(r.connections for r in runs)
    measured = [r for r in runs if r.connections == top and sum(r.batch_histogram.values())]
    bounds = sorted({int(b) for r in measured for b in r.batch_histogram}, key=int)
    if not measured:
        return []
    names = [bin_name(bounds, i) for i in range(len(bounds))]
    rows = []
    for r in measured:
        total = sum(r.batch_histogram.values())
        shares = [f"{r.batch_histogram.get(str(b), 0) / total:.0%}" for b in bounds]
        rows.append(f"| {r.model} | {r.label} | {total:,} | " + " | ".join(shares) + " |")
    return _section(
        f"Batch sizes at {top} connections: % of batches (rows per batch)",
        ["| model | run | batches | " + " | ".join(names) + " |"],
        "| --- | --- | ---: |" + " ---: |" * len(names),
        rows,
    )


def bin_name(bounds: list[int], index: int) -> str:
    """ "1", "2", "3-4", "5-8", ...: the sizes in bin `index` of bins ending at `bounds`."""
    low = bounds[index - 1] + 1 if index else 1
    high = bounds[index]
    return str(high) if low == high else f"{low}-{high}"


def _section(title: str, header: list[str], rule: str | None, rows: list[str]) -> list[str]:
    """A markdown section, or nothing when it has no rows (a mode or the ceiling not run)."""
    if not rows:
        return []
    return ["", f"## {title}", "", *header, *([rule] if rule else []), *rows]


def triton_ratios(runs: list[Run]) -> list[str]:
    """A table of modelserve req/s over Triton's, per model and connection count (the modes
    measured, per worker count), or nothing when Triton was not measured."""
    triton_runs = {(r.model, r.connections, r.wire): r for r in runs if r.mode == TRITON}
    if not triton_runs:
        return []
    labels = list(
        dict.fromkeys(r.label for r in sorted(runs, key=_label_order) if r.mode != TRITON)
    )
    lines = [
        "",
        "## modelserve / Triton (req/s, same run)",
        "",
        "Each modelserve run over Triton's through the same wire format: JSON tensors (TF "
        "Serving REST and V2 runs) or binary tensors (V2 binary runs).",
        "",
        "| "
        + " | ".join(
            ["model", "connections", "Triton", "Triton req/s", *(f"{m} / Triton" for m in labels)]
        )
        + " |",
        "| --- | ---: | --- | ---: |" + " ---: |" * len(labels),
    ]
    for (model, conns, wire), t in triton_runs.items():
        by_label = {
            r.label: r
            for r in runs
            if (r.model, r.connections, r.wire) == (model, conns, wire) and r.mode != TRITON
        }
        ratios = [
            f"{by_label[m].requests_per_second / t.requests_per_second:.2f}x"
            if m in by_label
            else "-"
            for m in labels
        ]
        lines.append(
            f"| {model} | {conns} | {t.label} | {t.requests_per_second:,.0f} | "
            + " | ".join(ratios)
            + " |"
        )
    return lines


def _label_order(run: Run) -> tuple[int, int, str]:
    """Modes in MODES' order, then by worker count, then protocol."""
    mode = MODES.index(run.mode) if run.mode in MODES else len(MODES)
    return mode, -1 if run.workers is None else run.workers, run.protocol


def plot(runs: list[Run], ceilings: dict[str, list[tuple[int, float, float]]], path: Path) -> None:
    """req/s against connections per model, one line per mode (and worker count) and Triton."""
    plt = pyplot()
    models = list(dict.fromkeys(r.model for r in runs))
    labels = list(dict.fromkeys(r.label for r in sorted(runs, key=_label_order)))
    styles = ("o-", "s--", "^:", "d-.", "v-", "P--", "X:", "*-.")
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for index, label in enumerate(labels):
            points = sorted(
                (r.connections, r.requests_per_second)
                for r in runs
                if r.model == model and r.label == label
            )
            if points:
                name = "Triton (PyTriton, dynamic batching)" if label == TRITON else label
                ax.plot(*zip(*points, strict=True), styles[index % len(styles)], label=name)
        best = max((rate for _, rate, _ in ceilings.get(model, [])), default=0.0)
        if best:
            ax.axhline(best, color="grey", lw=0.8, label="in-process ceiling")
        ax.set(title=model, xlabel="connections", ylabel="requests/s", xscale="log", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("modelserve: dynamic batching vs naive, the echo ceiling and Triton")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_workers(runs: list[Run], path: Path, histogram_model: str | None = None) -> None:
    """Left: req/s against the worker count at the highest connection count, per model and
    mode, Triton as a dashed line in the model's colour. Right: the batch-size histogram of
    one model's batched runs at that connection count, per worker count (and Triton's)."""
    plt = pyplot()
    top = max(r.connections for r in runs)
    at_top = [r for r in runs if r.connections == top]
    models = list(dict.fromkeys(r.model for r in at_top))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = dict.fromkeys(r.variant for r in sorted(at_top, key=_label_order))
    styles = ("o-", "s--", "^:", "d-.", "v-", "P--")
    for index, model in enumerate(models):
        colour = colours[index % len(colours)]
        for variant, style in zip(variants, itertools.cycle(styles)):
            points = sorted(
                (r.workers, r.requests_per_second)
                for r in at_top
                if r.model == model and r.variant == variant and r.workers is not None
            )
            if points:
                left.plot(
                    *zip(*points, strict=True), style, color=colour, label=f"{model} {variant}"
                )
        for r in at_top:
            if r.model == model and r.mode == TRITON:
                left.axhline(
                    r.requests_per_second, color=colour, ls="--", lw=1, label=f"{model} Triton"
                )
    counts = worker_counts(runs)
    left.set(
        title=f"req/s against front-end workers ({top} connections)",
        xlabel="workers (0: one process does everything)",
        ylabel="requests/s",
        xticks=counts,
        ylim=(0, None),
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    model = histogram_model if histogram_model in models else models[0]
    shown = sorted(
        (r for r in at_top if r.model == model and r.mode in ("batched", TRITON)),
        key=_label_order,
    )
    shown = [r for r in shown if sum(r.batch_histogram.values())]
    bounds = sorted({int(b) for r in shown for b in r.batch_histogram})
    width = 0.8 / max(1, len(shown))
    for index, r in enumerate(shown):
        total = sum(r.batch_histogram.values())
        shares = [100 * r.batch_histogram.get(str(b), 0) / total for b in bounds]
        xs = [i + (index - (len(shown) - 1) / 2) * width for i in range(len(bounds))]
        name = f"{r.label} (mean {r.mean_batch:.1f})"
        right.bar(xs, shares, width, label=name)
    right.set(
        title=f"{model}: batch sizes at {top} connections",
        xlabel="rows per batch",
        ylabel="% of batches",
        xticks=range(len(bounds)),
        xticklabels=[bin_name(bounds, i) for i in range(len(bounds))],
    )
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize=8)
    fig.suptitle("modelserve with front-end workers around one model process")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """--no-triton and --triton-python, as every benchmark with the Triton peer takes them."""
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton peer")
    parser.add_argument(
        "--triton-python",
        type=Path,
        default=TRITON_PYTHON if TRITON_PYTHON.exists() else None,
        metavar="PATH",
        help="the interpreter of the Triton peer's venv (scripts/triton-venv.sh; default: "
        f"{TRITON_PYTHON.relative_to(ROOT)} when it exists)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["digits", "votes", "sentiment"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    add_triton_arguments(parser)
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        metavar="N",
        help="run modelserve's modes once per worker count, with `--workers N` (0: one "
        "process); default: once, with the server's default",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        default=["v1"],
        choices=list(PROTOCOL_SUFFIX),
        help="modelserve's requests: TF Serving REST :predict (v1), V2 infer with the body "
        "Triton is sent (v2), the same with binary tensors both ways (v2bin; Triton too); "
        "default v1",
    )
    parser.add_argument(
        "--histogram-model",
        default="votes",
        metavar="MODEL",
        help="the model whose batch-size histograms are plotted per worker count",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--name",
        help="the results' file names, <output>/<name>.{md,json,png} (default: serving, or "
        "serving_workers with --workers)",
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw table and plot from <output>/<name>.json"
    )
    args = parser.parse_args()
    name = args.name or ("serving_workers" if args.workers else "serving")
    if args.replot:
        saved = json.loads((args.output / f"{name}.json").read_text())
        runs = [Run(**run) for run in saved["runs"]]
        ceilings = {
            model: [(int(size), float(rate), float(ms)) for size, rate, ms in rows]
            for model, rows in saved["ceilings"].items()
        }
        write_results(
            runs, ceilings, args.output, name, saved.get("provenance"), args.histogram_model
        )
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt install wrk")
    missing = [m for m in args.models if not (MODELS / m).is_dir()]
    if missing:
        sys.exit(f"not in models/: {missing} (resnet50: modelserve train resnet50 --weights none)")
    args.output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    provenance = describe_run()
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
        runs = run_gateway(
            args.models,
            args.modes,
            args.connections,
            args.duration,
            Path(tmp),
            args.workers or [None],
            args.protocols,
        )
        if not skip_triton:
            print(f"Triton peer ({args.triton_python}) ...", flush=True)
            wires = dict.fromkeys("v2bin" if p == "v2bin" else "v2" for p in args.protocols)
            runs += run_triton(
                args.triton_python,
                args.models,
                args.connections,
                args.duration,
                Path(tmp),
                list(wires),
            )
    saved = {"provenance": provenance, "runs": [vars(run) for run in runs], "ceilings": ceilings}
    (args.output / f"{name}.json").write_text(json.dumps(saved, indent=1))
    write_results(runs, ceilings, args.output, name, provenance, args.histogram_model)


def describe_run() -> list[str]:
    """Markdown lines: the command, when, at which revision and on what machine."""
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    command = shlex.join(
        ["python", str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]]
    )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- command: `{command}`",
        f"- date: {when}; revision: {revision or '?'}",
        f"- machine: {os.cpu_count()} CPUs, {processor()} (wrk and the servers share them); "
        f"load average at the start {load}",
    ]


def processor() -> str:
    """The CPU's model and its widest vector instructions: TensorFlow's kernels (and so how
    much of the machine a model takes) depend on them."""
    flags_line = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    flags = set(flags_line[1].split()) if flags_line else set()
    widest = next((f.upper() for f in ("avx512f", "avx2", "avx") if f in flags), "no AVX")
    return f"{cpu_model()}, {widest}"


def cpu_model() -> str:
    model = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    return model[1].strip() if model else platform.processor() or platform.machine()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def write_results(
    runs: list[Run],
    ceilings: dict[str, list[tuple[int, float, float]]],
    output: Path,
    name: str = "serving",
    provenance: list[str] | None = None,
    histogram_model: str | None = None,
) -> None:
    table = markdown(runs, ceilings, provenance)
    (output / f"{name}.md").write_text(table)
    if len(worker_counts(runs)) > 1:
        plot_workers(runs, output / f"{name}.png", histogram_model)
    else:
        plot(runs, ceilings, output / f"{name}.png")
    print()
    print(table)
    print(f"written: {output / f'{name}.md'}, {output / f'{name}.png'}")


if __name__ == "__main__":
    main()
