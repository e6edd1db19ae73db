"""Large requests are decoded off the event loop: while a ~60 MB JSON body or a 10 MB gRPC
message of millions of empty strings is being decoded, `/healthz` and gRPC health still answer
promptly (REST, gRPC and the probes share one event loop; a liveness probe that times out gets
the pod killed).

The machine running the tests is shared and busy, so no fixed latency is asserted: each test
measures the probes while the server is idle, then during the big request, and asserts that
they stay within a small multiple of the idle latency plus a margin far below the decode time,
and a small fraction of how long the request took. Before decoding moved off the loop, the
probes waited for the whole decode (seconds).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from service.core.decoding import Decoder, collector_pause
from service.errors import QueueFullError
from service.settings import Settings
from tests.saved_models import export_affine, export_text, write_config
from tests.server import grpc_target, running_server

VALUES = 10_000_000  # "0.125," each: a 60 MB body, under the 64 MiB default limit
STRINGS = 5_000_000  # empty strings: a 10 MB gRPC message
PROBE_INTERVAL = 0.02


@dataclass
class Server:
    url: str
    grpc: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """plus (x float32 [None] -> y) and text (text string [None] -> length, ...), without
    batching: its queue would refuse millions of rows once they are decoded."""
    root = tmp_path_factory.mktemp("hostile")
    export_affine(root / "repo", "plus", 1)
    export_text(root / "repo", "text", 1)
    models = [{"name": name, "batching": {"enabled": False}} for name in ("plus", "text")]
    config = write_config(root / "serving.yaml", models)
    settings = Settings(model_base_path=root / "repo", config=config, poll_interval_seconds=0)
    with running_server(settings) as url:
        yield Server(url, grpc_target(url))


@dataclass
class Probes:
    """/healthz and gRPC health Check, each in its own thread, over and over: latencies."""

    server: Server
    rest: list[float] = field(default_factory=list)
    grpc: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[None]:
        with (
            httpx.Client(base_url=self.server.url, timeout=60) as client,
            grpc.insecure_channel(self.server.grpc) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest()
            health.Check(check, timeout=60)  # connected before timing
            threads = [
                threading.Thread(target=self._loop, args=(lambda: _ok(client), self.rest)),
                threading.Thread(target=self._loop, args=(lambda: health.Check(check), self.grpc)),
            ]
            for thread in threads:
                thread.start()
            try:
                yield
            finally:
                self._stop.set()
                for thread in threads:
                    thread.join(timeout=60)

    def _loop(self, probe: Callable[[], Any], latencies: list[float]) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            probe()
            latencies.append(time.perf_counter() - started)
            self._stop.wait(PROBE_INTERVAL)


def _ok(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200


def probed(server: Server, seconds: float, work: Callable[[], Any] = lambda: None) -> Probes:
    """Probes for `seconds`, then while `work()` runs."""
    probes = Probes(server)
    with probes.running():
        time.sleep(seconds)
        work()
    return probes


def assert_probes_answered(server: Server, request: Callable[[], Any]) -> None:
    """Probes stay answered while `request` runs: within a small multiple of their idle time,
    and within a quarter of the request's own time."""
    idle = probed(server, 1.0)
    took: list[float] = []

    def timed() -> None:
        started = time.perf_counter()
        request()
        took.append(time.perf_counter() - started)

    busy = probed(server, 0, timed)
    (seconds,) = took
    for name, quiet, during in (("/healthz", idle.rest, busy.rest), ("gRPC", idle.grpc, busy.grpc)):
        bound = 4 * max(quiet) + 0.25
        worst = max(during)
        report = (
            f"{name}: idle {statistics.median(quiet) * 1000:.0f} ms (worst "
            f"{max(quiet) * 1000:.0f} ms), during the {seconds:.1f} s request worst "
            f"{worst * 1000:.0f} ms over {len(during)} probes"
        )
        print(report)
        assert len(during) >= 3, report
        assert worst <= bound, report
        assert worst <= seconds / 4, report


def numbers_body(last: bytes = b"0.125") -> bytes:
    return b'{"instances": [' + b"0.125," * (VALUES - 1) + last + b"]}"


def test_a_60_mb_json_body_leaves_the_probes_answering(server: Server) -> None:
    body = numbers_body()
    assert 55e6 < len(body) < 64 * 1024 * 1024
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=300) as client:
            answers.append(
                client.post(
                    f"{server.url}/v1/models/plus:predict",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            )

    assert_probes_answered(server, send)
    assert answers[0].status_code == 200, answers[0].text[:300]
    assert len(answers[0].json()["predictions"]) == VALUES


def test_a_60_mb_body_that_ends_in_a_400_leaves_the_probes_answering(server: Server) -> None:
    body = numbers_body(last=b'"0.125"')  # a string after ten million numbers
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=300) as client:
            answers.append(client.post(f"{server.url}/v1/models/plus:predict", content=body))

    assert_probes_answered(server, send)
    assert answers[0].status_code == 400, answers[0].text[:300]
    assert "expected numbers" in answers[0].json()["error"]


def strings_request(model: str = "text") -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.output_filter.append("length")
    tensor: tensor_pb2.TensorProto = request.inputs["text"]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=STRINGS)
    tensor.string_val.extend([b""] * STRINGS)
    message: bytes = request.SerializeToString()
    return message


def predict_raw(server: Server, message: bytes, timeout: float) -> grpc.Future:
    channel = grpc.insecure_channel(
        server.grpc,
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    predict = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    future: grpc.Future = predict.future(message, timeout=timeout)
    return future


def test_a_grpc_message_of_millions_of_empty_strings_leaves_the_probes_answering(
    server: Server,
) -> None:
    """Parsed in the helper process, turned into an array and a tensor in chunks, and run."""
    message = strings_request("text")
    assert 9e6 < len(message) < 12e6

    def call() -> None:
        answer = predict_raw(server, message, timeout=300).result()
        assert answer.outputs["length"].tensor_shape.dim[0].size == STRINGS

    assert_probes_answered(server, call)


def test_large_bodies_beyond_the_memory_budget_wait_then_are_refused() -> None:
    """The pool decodes what fits `memory_bytes` (32 bytes per body byte); the next body waits
    for room, and once as much again waits, another is refused (429) rather than queued."""
    body = 1024 * 1024  # estimated at 32 MiB: one fits a 40 MiB budget at a time

    async def scenario() -> tuple[list[str], str]:
        decoder = Decoder(threads=2, memory_bytes=40 * 1024 * 1024, inline_bytes=0)
        release = threading.Event()
        done: list[str] = []

        def work(name: str) -> str:
            release.wait(10)
            done.append(name)
            return name

        first = asyncio.ensure_future(decoder.run(body, lambda: work("first")))
        second = asyncio.ensure_future(decoder.run(body, lambda: work("second")))
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFullError) as refused:
            await decoder.run(body, lambda: work("third"))
        assert decoder.busy_bytes == 32 * 1024 * 1024 and not done  # the second waits
        release.set()
        await asyncio.gather(first, second)
        decoder.close()
        return done, refused.value.message

    done, message = asyncio.run(scenario())
    assert done == ["first", "second"]
    assert "decode_memory_bytes" in message


def test_the_garbage_collector_is_paused_while_large_decodes_run_and_resumes_after() -> None:
    """Full collections walking a decoded document's millions of lists held the GIL for
    hundreds of ms (the probes' last stalls): paused while any large decode runs."""
    decoder = Decoder(threads=2, memory_bytes=1 << 30, inline_bytes=16)
    first_inside, second_done = threading.Event(), threading.Event()

    def first() -> bool:
        first_inside.set()
        assert second_done.wait(30)
        return gc.isenabled()  # the other decode has ended: still paused for this one

    def second() -> bool:
        assert first_inside.wait(30)
        return gc.isenabled()

    async def main() -> tuple[bool, bool]:
        running = asyncio.ensure_future(decoder.run(1024, first))
        during = await decoder.run(1024, second)
        second_done.set()
        return during, await running

    assert gc.isenabled()
    try:
        assert asyncio.run(main()) == (False, False)
        assert gc.isenabled(), "the collector did not resume after the decodes"
        assert asyncio.run(decoder.run(8, gc.isenabled)), (
            "a small body decoded inline must not pause the collector"
        )
        with collector_pause:  # nested pauses: only the outermost resumes it
            with collector_pause:
                pass
            assert not gc.isenabled()
        assert gc.isenabled()
    finally:
        decoder.close()
        gc.enable()
