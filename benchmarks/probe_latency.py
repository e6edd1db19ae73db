"""Health probe latency while the server decodes a huge request: this tree vs a baseline revision.

Kubernetes restarts a server whose probes time out, so `/healthz` and gRPC
`grpc.health.v1.Health/Check` must answer quickly even while one request's body is being
decoded. The target: probes within 100 ms during the decode.

For each of two code versions, side by side in one run — the current working tree, and a
baseline git revision (default 5a20f88, before the hardening commit 97a04dc) checked out in a
temporary `git worktree` under /tmp — one `modelserve serve` process on loopback (free ports,
`--model-base-path models/`), started with this venv's python from inside that tree (the tree
first on PYTHONPATH; `service.__file__` is checked). Then, per scenario, two prober threads
call `/healthz` (keep-alive HTTP/1.1) and `Health/Check` (their own gRPC channel) back to back
every `--interval-ms`, while:

- idle:      nothing else, for `--idle-seconds`;
- json 200:  a ~`--json-mb` MB digits body (28x28x1 float64 instances, fewer than the default
             row limit) is POSTed to `/v1/models/digits:predict`;
- json 400:  the same size body whose last instance has the wrong shape (28x28);
- grpc big:  a gRPC Predict to sentiment with `--grpc-strings` empty strings (~2 bytes each).

For each: probe latency p50 / p99 / max per protocol, how many probes took longer than the
target, and the big request's own status and duration. A prober waits for each answer before
its next call, so a stall is one long sample: read the max and the count over the target.

Run from the repository root:  python benchmarks/probe_latency.py [--baseline 5a20f88]
Small smoke test:              python benchmarks/probe_latency.py --json-mb 2 --grpc-strings 100000
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import cpu_model  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # the server's default max_request_bytes
DEFAULT_MAX_REQUEST_ROWS = 4096  # half of the default max_queue_rows (256 x 32) since 97a04dc
SCENARIOS = ("idle", "json 200", "json 400", "grpc big")

_servers: list[subprocess.Popen[bytes]] = []


# -- payloads -------------------------------------------------------------------------------


@dataclass
class Payloads:
    json_ok: bytes
    json_bad: bytes
    instances: int
    grpc_big: bytes
    strings: int


def digits_bodies(megabytes: float, seed: int = 0) -> tuple[bytes, bytes, int]:
    """(valid body, same-size body whose last instance is 28x28, instance count)."""
    rng = np.random.default_rng(seed)
    sample = orjson.dumps(rng.random((64, 28, 28, 1)), option=orjson.OPT_SERIALIZE_NUMPY)
    per_instance = len(sample) / 64
    target = int(megabytes * 1e6)
    count = max(2, int(target / per_instance))
    while True:
        pixels = rng.random((count, 28, 28, 1))
        ok = orjson.dumps({"instances": pixels}, option=orjson.OPT_SERIALIZE_NUMPY)
        if len(ok) < MAX_REQUEST_BYTES - 4096:
            break
        count = int(count * 0.98)
    head = orjson.dumps({"instances": pixels[:-1]}, option=orjson.OPT_SERIALIZE_NUMPY)
    last = orjson.dumps(pixels[-1, :, :, 0], option=orjson.OPT_SERIALIZE_NUMPY)
    assert head.endswith(b"]]}")
    bad = head[:-2] + b"," + last + b"]}"
    return ok, bad, count


def sentiment_strings(count: int) -> bytes:
    """A serialised PredictRequest: sentiment's `text` input, `count` empty strings."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=count)]
        ),
    )
    tensor.string_val.extend([b""] * count)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    request.inputs["text"].CopyFrom(tensor)
    return request.SerializeToString()


def build_payloads(json_mb: float, strings: int) -> Payloads:
    ok, bad, instances = digits_bodies(json_mb)
    return Payloads(ok, bad, instances, sentiment_strings(strings), strings)


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _kill_all() -> None:
    for process in _servers:
        if process.poll() is None:
            process.kill()


def _on_signal(signum: int, _frame: object) -> None:
    _kill_all()
    sys.exit(128 + signum)


def server_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_import(tree: Path) -> str:
    """The `service` package the server will import from `tree`; it must be the tree's own."""
    found = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        cwd=tree,
        env=server_env(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"from {tree}, `import service` loads {found}, not the tree's own")
    return found


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty)"


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@contextmanager
def server(name: str, tree: Path, workdir: Path, start_timeout: float) -> Iterator[tuple[int, int]]:
    """`modelserve serve` from `tree` on loopback; yields (HTTP port, gRPC port) once /readyz
    answers 200. Raises with the log's last lines if it exits or is not ready in time."""
    port, grpc_port = free_port(), free_port()
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    command = [
        sys.executable,
        "-c",
        "from service.cli import app; app()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--model-base-path",
        str(MODELS),
        "--poll-interval",
        "0",
        "--log-level",
        "warning",
        "--log-format",
        "text",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=tree, env=server_env(tree), stdout=log, stderr=subprocess.STDOUT
        )
    _servers.append(process)
    try:
        deadline = time.monotonic() + start_timeout
        while http_status(port, "/readyz") != 200:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} server exited with {process.returncode} before /readyz answered "
                    f"200; last lines of {log_path}:\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} server: /readyz not 200 after {start_timeout:.0f} s; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.3)
        yield port, grpc_port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        _servers.remove(process)


@contextmanager
def baseline_tree(revision: str) -> Iterator[Path]:
    """A detached `git worktree` of `revision` under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="probe-baseline-", dir="/tmp"))
    path.rmdir()
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(path), revision],
        cwd=ROOT,
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


# -- probing --------------------------------------------------------------------------------


@dataclass
class Probes:
    """Latencies (ms) of the probes that started inside a window, and failures."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def stat(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def worst(self) -> float:
        return max(self.latencies_ms, default=float("nan"))

    def over(self, target_ms: float) -> int:
        return sum(lat > target_ms for lat in self.latencies_ms)


class Prober(threading.Thread):
    """Calls `probe` back to back, waiting `interval` between one answer and the next call;
    keeps (start, latency ms, ok) of each."""

    def __init__(self, probe: Callable[[], bool], interval: float) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                ok = self.probe()
            except Exception:
                ok = False
            self.samples.append((start, (time.perf_counter() - start) * 1000, ok))
            self.stop.wait(self.interval)

    def window(self, begin: float, end: float) -> Probes:
        result = Probes()
        for start, latency, ok in self.samples:
            if begin <= start <= end:
                if ok:
                    result.latencies_ms.append(latency)
                else:
                    result.failures += 1
        return result


class HttpProbe:
    """GET /healthz on one keep-alive connection (reopened after a failure)."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def __call__(self) -> bool:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
        try:
            self.connection.request("GET", "/healthz")
            response = self.connection.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class GrpcProbe:
    """grpc.health.v1.Health/Check (the server as a whole) on a channel of its own."""

    def __init__(self, grpc_port: int, timeout: float) -> None:
        # its own connection: never queued behind the big request's bytes
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.request = health_pb2.HealthCheckRequest(service="")
        self.timeout = timeout

    def __call__(self) -> bool:
        answer = self.stub.Check(self.request, timeout=self.timeout)
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.channel.close()


# -- the big requests -----------------------------------------------------------------------


def post_json(port: int, body: bytes, timeout: float) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/v1/models/digits:predict",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        text = response.read()
    except TimeoutError:
        return f"client timeout ({timeout:.0f} s)"
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}"
    finally:
        connection.close()
    if response.status == 200:
        return "200"
    try:
        detail = str(orjson.loads(text).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        detail = text[:200].decode(errors="replace")
    return f"{response.status}: {detail}"


def grpc_predict(grpc_port: int, request: bytes, timeout: float) -> str:
    big = 1 << 30
    options = [
        ("grpc.max_send_message_length", big),
        ("grpc.max_receive_message_length", big),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
        # bytes in, bytes out: the client neither serialises nor parses on the clock
        call = channel.unary_unary(PREDICT)
        try:
            call(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"DEADLINE_EXCEEDED (client timeout {timeout:.0f} s)"
            return f"{code.name}: {error.details()}"
    return "OK"


# -- one version ----------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    status: str
    seconds: float
    http: Probes
    grpc: Probes


def settle(http_probe: HttpProbe, limit: float) -> None:
    """Waits (up to `limit` s) until five probes in a row answer within 20 ms: the server has
    finished whatever the previous scenario left running."""
    deadline = time.monotonic() + limit
    quick = 0
    while quick < 5 and time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            http_probe()
            quick = quick + 1 if time.perf_counter() - start < 0.02 else 0
        except (OSError, http.client.HTTPException):
            quick = 0
        time.sleep(0.05)


def warm_up(port: int, grpc_port: int) -> None:
    """One small predict per model, so no scenario pays for a first call's tracing."""
    post_json(port, orjson.dumps({"instances": np.zeros((1, 28, 28, 1)).tolist()}), 120)
    grpc_predict(grpc_port, sentiment_strings(1), 120)


def measure(
    name: str, tree: Path, payloads: Payloads, args: argparse.Namespace, workdir: Path
) -> list[Result]:
    results = []
    with server(name, tree, workdir, args.start_timeout) as (port, grpc_port):
        warm_up(port, grpc_port)
        http_probe = HttpProbe(port, args.request_timeout)
        grpc_probe = GrpcProbe(grpc_port, args.request_timeout)

        def idle() -> str:
            time.sleep(args.idle_seconds)
            return "-"

        big: dict[str, Callable[[], str]] = {
            "idle": idle,
            "json 200": lambda: post_json(port, payloads.json_ok, args.request_timeout),
            "json 400": lambda: post_json(port, payloads.json_bad, args.request_timeout),
            "grpc big": lambda: grpc_predict(grpc_port, payloads.grpc_big, args.request_timeout),
        }
        try:
            for scenario in args.scenarios:
                settle(http_probe, args.settle_seconds)
                probers = [
                    Prober(http_probe, args.interval_ms / 1000),
                    Prober(grpc_probe, args.interval_ms / 1000),
                ]
                for prober in probers:
                    prober.start()
                time.sleep(0.2)  # both probers running before the big request starts
                begin = time.perf_counter()
                status = big[scenario]()
                end = time.perf_counter()
                for prober in probers:
                    prober.stop.set()
                for prober in probers:
                    prober.join(args.request_timeout + 5)
                result = Result(
                    scenario,
                    status,
                    end - begin,
                    probers[0].window(begin, end),
                    probers[1].window(begin, end),
                )
                results.append(result)
                print(f"  {name:24} {line(result, args.target_ms)}", flush=True)
        finally:
            http_probe.close()
            grpc_probe.close()
    return results


# -- output ---------------------------------------------------------------------------------


def short(status: str, width: int = 70) -> str:
    return status if len(status) <= width else status[: width - 3] + "..."


def line(r: Result, target: float) -> str:
    def part(label: str, p: Probes) -> str:
        failed = f" failed {p.failures}" if p.failures else ""
        return (
            f"{label} p50 {p.stat(50):6.1f} p99 {p.stat(99):7.1f} max {p.worst():7.1f} ms "
            f"(>{target:.0f} ms: {p.over(target)}/{len(p.latencies_ms)}{failed})"
        )

    return (
        f"{r.scenario:9} {r.seconds:6.2f} s  {short(r.status, 40):40}  "
        f"{part('http', r.http)}  {part('grpc', r.grpc)}"
    )


def cell(p: Probes) -> str:
    if not p.latencies_ms:
        return f"no probe (failed {p.failures})" if p.failures else "no probe"
    return f"{p.stat(50):.1f} / {p.stat(99):.1f} / {p.worst():.1f}"


def count_cell(p: Probes, target: float) -> str:
    failed = f", {p.failures} failed" if p.failures else ""
    return f"{p.over(target)} / {len(p.latencies_ms)}{failed}"


def table(results: list[Result], target: float) -> str:
    lines = [
        f"| scenario | big request status | big request s | /healthz p50 / p99 / max ms "
        f"| /healthz > {target:.0f} ms | Health/Check p50 / p99 / max ms "
        f"| Health/Check > {target:.0f} ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        status = short(r.status, 90).replace("|", "\\|")
        lines.append(
            f"| {r.scenario} | {status} | {r.seconds:.2f} | {cell(r.http)} "
            f"| {count_cell(r.http, target)} | {cell(r.grpc)} | {count_cell(r.grpc, target)} |"
        )
    return "\n".join(lines)


def summary(
    current: list[Result], baseline: list[Result], names: tuple[str, str], target: float
) -> list[str]:
    lines = []
    base = {r.scenario: r for r in baseline}
    for r in current:
        b = base.get(r.scenario)
        if b is None:
            continue
        parts = []
        for label, mine, theirs in (("/healthz", r.http, b.http), ("Health/Check", r.grpc, b.grpc)):
            if not (mine.latencies_ms and theirs.latencies_ms):
                parts.append(f"{label}: no probe in one of the windows")
                continue
            ratio = theirs.worst() / max(mine.worst(), 0.1)
            parts.append(
                f"{label} max {theirs.worst():.0f} -> {mine.worst():.0f} ms "
                f"(baseline / current {ratio:.1f}x)"
            )
        lines.append(f"- {r.scenario}: " + "; ".join(parts))
    for name, results in zip(names, (current, baseline), strict=True):
        loaded = [r for r in results if r.scenario != "idle"]
        worst = max((max(r.http.worst(), r.grpc.worst()) for r in loaded), default=float("nan"))
        met = all(
            r.http.over(target) == 0
            and r.grpc.over(target) == 0
            and not r.http.failures
            and not r.grpc.failures
            for r in loaded
        )
        lines.append(
            f"- target (every probe within {target:.0f} ms during the big requests), {name}: "
            f"{'met' if met else 'NOT met'} (worst probe {worst:.0f} ms)"
        )
    return lines


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


# -- main -----------------------------------------------------------------------------------


def run_versions(
    args: argparse.Namespace,
    names: tuple[str, str],
    payloads: Payloads,
    results: dict[str, list[Result]],
) -> None:
    """Measures both versions, one server at a time; the baseline worktree is removed after."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="probe-latency-")))
        base_path = stack.enter_context(baseline_tree(args.baseline))
        for name, tree in zip(names, (ROOT, base_path), strict=True):
            print(f"{name}: service from {check_import(tree)}", flush=True)
        for name, tree in zip(names, (ROOT, base_path), strict=True):
            results[name] = measure(name, tree, payloads, args, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default="5a20f88", help="git revision to compare with")
    parser.add_argument("--json-mb", type=float, default=60.0, help="digits JSON body size, MB")
    parser.add_argument("--grpc-strings", type=int, default=5_000_000, help="empty strings")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--interval-ms", type=float, default=10.0, help="pause between probes")
    parser.add_argument("--target-ms", type=float, default=100.0)
    parser.add_argument(
        "--request-timeout", type=float, default=60.0, help="client timeout, seconds"
    )
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=60.0, help="most to wait between scenarios"
    )
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument(
        "--markdown",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "probe_latency.md",
        help="results file ('-': none)",
    )
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the client imports TF's protos
    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    started = datetime.now(UTC)
    load = os.getloadavg()
    cpus = len(os.sched_getaffinity(0))
    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    try:
        baseline_rev = git("rev-parse", "--short", f"{args.baseline}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"error: {args.baseline!r} is not a git revision of {ROOT}")
    names = (f"working tree ({head}{' + changes' if dirty else ''})", f"baseline {baseline_rev}")
    print(
        f"{started:%Y-%m-%d %H:%M} UTC, {cpus} CPUs ({cpu_model()}), "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )

    print("building the bodies ...", flush=True)
    payloads = build_payloads(args.json_mb, args.grpc_strings)
    rows_note = (
        "" if payloads.instances <= DEFAULT_MAX_REQUEST_ROWS else " (over the default row limit)"
    )
    print(
        f"  digits JSON: {len(payloads.json_ok) / 1e6:.1f} MB, {payloads.instances} instances"
        f"{rows_note}; wrong-shape body {len(payloads.json_bad) / 1e6:.1f} MB; "
        f"gRPC Predict: {len(payloads.grpc_big) / 1e6:.1f} MB, {payloads.strings:,} strings",
        flush=True,
    )

    results: dict[str, list[Result]] = {}
    try:
        run_versions(args, names, payloads, results)
    except (RuntimeError, subprocess.CalledProcessError) as error:
        sys.exit(f"error: {error}")

    lines_out = []
    for name in names:
        lines_out += [f"### {name}", "", table(results[name], args.target_ms), ""]
    lines_out += [
        f"### {names[0]} vs {names[1]}: worst probe, baseline -> current",
        "",
        *summary(results[names[0]], results[names[1]], names, args.target_ms),
    ]
    report = "\n".join(lines_out)
    print()
    print(report)

    if str(args.markdown) != "-":
        command = shlex.join(["python", "benchmarks/probe_latency.py", *sys.argv[1:]])
        preamble = [
            "# Health probe latency while the server decodes a huge request",
            "",
            f"Command: `{command}`  ",
            f"Date: {started:%Y-%m-%d %H:%M} UTC  ",
            f"Machine: {cpus} CPUs ({cpu_model()}), Python {platform.python_version()}, "
            f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}  ",
            f"Bodies: digits JSON {len(payloads.json_ok) / 1e6:.1f} MB "
            f"({payloads.instances} instances of 28x28x1 float64), the 400 one "
            f"{len(payloads.json_bad) / 1e6:.1f} MB (last instance 28x28); gRPC Predict to "
            f"sentiment {len(payloads.grpc_big) / 1e6:.1f} MB ({payloads.strings:,} empty "
            "strings)  ",
            f"Probes: `/healthz` (keep-alive) and `grpc.health.v1.Health/Check` (own channel), "
            f"each every {args.interval_ms:g} ms after the previous answer; cells are "
            f"p50 / p99 / max in ms of the probes started while the big request ran; "
            f"target {args.target_ms:g} ms.",
            "",
        ]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(preamble) + "\n" + report + "\n", encoding="utf-8")
        print(f"\nwritten: {args.markdown}")


if __name__ == "__main__":
    main()
