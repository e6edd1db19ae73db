"""Where an echo-mode request's CPU time goes, part by part: the server's own Python cost per
request, measured in process without sockets or a load generator, so that parts of a few
microseconds show through the noise of a shared machine.

64 connections (in-memory transports, no sockets) send the votes predict request to an HTTP
protocol and app built as `modelserve serve --workers 0` builds them in echo mode; each
connection sends its next request when its answer is complete. Each variant below runs in
turn, round after round in one process, and the event-loop thread's CPU time per request is
reported (median and fastest round): a part's cost is the full path's time minus the time
without it. The parts left out are replaced here only, in this process:

- "uvicorn's protocol": uvicorn's own HttpToolsProtocol instead of modelserve's (its header,
  timeout and connection limits, disconnect notice, one-send responses, client pause);
- "no request observer": `service.observer.observe` (metrics and access log) does nothing;
- "no batcher": the batcher answers at once with the previous answer (no queue, no model
  call on a thread, no wait for the batch);
- and, as the reference, `benchmarks/bare_fastapi.py` behind uvicorn's protocol, as
  `benchmarks/hot_path.py` serves it.

Run from the repository root:  python benchmarks/hot_path_parts.py [--rounds 16]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import serving

if TYPE_CHECKING:
    from service.server import ModelServer

MODEL = "votes"
CONNECTIONS = 64


def http_request() -> bytes:
    body = json.dumps(serving.request_body(MODEL)).encode()
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class MemoryTransport:
    """What the protocol writes to: counts complete answers (Content-Length framed) and calls
    `answered` with each one's status."""

    def __init__(self, answered: Callable[[int], None]) -> None:
        self._pending = b""
        self._answered = answered
        self._closing = False

    def write(self, data: bytes) -> None:
        self._pending += data
        while True:
            head, separator, rest = self._pending.partition(b"\r\n\r\n")
            if not separator:
                return
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) < length:
                return
            self._pending = rest[length:]
            self._answered(int(head.split(b" ", 2)[1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8501)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class Variant:
    name: str
    protocol: type
    config: Any  # the uvicorn.Config the protocol is built with
    switches: set[str] = field(default_factory=set)  # the parts left out (see SWITCHES)


SWITCHES: set[str] = set()  # the parts left out in the running variant


async def connection(variant: Variant, state: Any, request: bytes, count: int) -> list[int]:
    loop = asyncio.get_running_loop()
    statuses: list[int] = []
    answered = asyncio.Event()

    def note(status: int) -> None:
        statuses.append(status)
        answered.set()

    protocol = variant.protocol(config=variant.config, server_state=state, app_state={}, _loop=loop)
    protocol.connection_made(MemoryTransport(note))
    for _ in range(count):
        answered.clear()
        protocol.data_received(request)
        await answered.wait()
    protocol.connection_lost(None)
    return statuses


async def drive(variant: Variant, request: bytes, requests: int) -> list[int]:
    from uvicorn.server import ServerState

    state = ServerState()
    per_connection = max(1, requests // CONNECTIONS)
    runs = [connection(variant, state, request, per_connection) for _ in range(CONNECTIONS)]
    return [status for statuses in await asyncio.gather(*runs) for status in statuses]


async def loop_cpu_per_request(variant: Variant, request: bytes, requests: int) -> float:
    """Microseconds of this thread's CPU a request; the garbage collector runs before, so one
    variant does not pay for another's garbage."""
    SWITCHES.clear()
    SWITCHES.update(variant.switches)
    gc.collect()
    started = time.thread_time()
    statuses = await drive(variant, request, requests)
    used = time.thread_time() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"{variant.name}: statuses {sorted(set(statuses))}")
    return used / len(statuses) * 1e6


def install_switches() -> None:
    """Wraps the parts a variant may leave out; with no switch on they run as they are."""
    import service.http.middleware as middleware
    from service.core.batching import Batcher
    from service.core.record import RequestRecord
    from service.metrics import Metrics
    from service.observer import Finished, observe

    def maybe_observe(metrics: Metrics, record: RequestRecord, finished: Finished) -> None:
        if "observer" not in SWITCHES:
            observe(metrics, record, finished)

    middleware.observe = maybe_observe  # type: ignore[attr-defined]  # the name it calls

    submit = Batcher.submit
    last: dict[str, Any] = {}

    async def maybe_submit(self: Batcher, *args: Any, **kwargs: Any) -> Any:
        if "batcher" in SWITCHES and "answer" in last:
            return last["answer"]
        last["answer"] = await submit(self, *args, **kwargs)
        return last["answer"]

    Batcher.submit = maybe_submit  # type: ignore[method-assign]


def echo_server(workdir: Path) -> ModelServer:
    """The single-process server's parts in echo mode (what `--workers 0` runs)."""
    os.environ["MODELSERVE_ECHO"] = "true"
    from service.core.serving_config import load_serving_config
    from service.server import ModelServer
    from service.settings import Settings

    config_file = workdir / "serving.yaml"
    batching = serving.batching_for("echo", MODEL)
    models = [{"name": MODEL, "base_path": str(serving.MODELS / MODEL), "batching": batching}]
    config_file.write_text(json.dumps({"models": models}))  # JSON is YAML
    settings = Settings(echo=True, workers=0, grpc_port=0, log_level="warning")
    return ModelServer(settings, load_serving_config(config_file, serving.MODELS))


def variants(server: ModelServer) -> list[Variant]:
    import uvicorn
    from bare_fastapi import app as bare_app

    from service.http.app import asgi_app
    from service.http.limits import uvicorn_config

    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "server_header": False}
    app = asgi_app(server)
    ours = uvicorn_config(server, app, **options)
    theirs = uvicorn.Config(app, **options)
    bare = uvicorn.Config(bare_app, **options)
    for config in (ours, theirs, bare):
        config.load()
    return [
        Variant("echo, full path", ours.http_protocol_class, ours),
        Variant("echo, uvicorn's protocol", theirs.http_protocol_class, theirs),
        Variant("echo, no request observer", ours.http_protocol_class, ours, {"observer"}),
        Variant("echo, no batcher", ours.http_protocol_class, ours, {"batcher"}),
        Variant("bare FastAPI route, uvicorn's protocol", bare.http_protocol_class, bare),
    ]


async def until_ready(server: ModelServer, seconds: float = 120.0) -> None:
    give_up = time.monotonic() + seconds
    while not server.parts.repository.is_ready():
        if time.monotonic() > give_up:
            raise RuntimeError(f"the echo server did not load {MODEL} in {seconds:g} s")
        await asyncio.sleep(0.1)


async def measure(server: ModelServer, rounds: int, requests: int) -> dict[str, list[float]]:
    request = http_request()
    runs = variants(server)
    timings: dict[str, list[float]] = {variant.name: [] for variant in runs}
    async with server.running():
        await until_ready(server)
        for variant in runs:  # warm-up: caches, the batcher's first answer
            await loop_cpu_per_request(variant, request, requests)
        for round_number in range(rounds):
            for variant in runs:
                timings[variant.name].append(await loop_cpu_per_request(variant, request, requests))
            print(f"  round {round_number + 1} of {rounds}", end="\r", flush=True)
    return timings


def report(timings: dict[str, list[float]], rounds: int, requests: int) -> None:
    medians = {name: statistics.median(values) for name, values in timings.items()}
    full = medians["echo, full path"]
    print(
        f"\nevent-loop CPU per request, µs ({rounds} rounds of {requests} requests, "
        f"{CONNECTIONS} connections)\n"
    )
    print("| variant | median | fastest round | full path minus it |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in timings.items():
        saved = "" if name == "echo, full path" else f"{full - medians[name]:,.1f}"
        print(f"| {name} | {medians[name]:,.1f} | {min(values):,.1f} | {saved} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4096, help="per variant and round")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).parent))
    install_switches()
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        timings = uvloop.run(measure(echo_server(Path(tmp)), args.rounds, args.requests))
    report(timings, args.rounds, args.requests)


if __name__ == "__main__":
    main()
