"""Hostile uploads and empty batches against real servers.

- Image decodes are bounded: at most `image_decode_threads` at once, at most
  `max_decode_pixels` in flight (observed through /metrics while a burst runs), and the
  pixel budget's queue in isolation (order, deadline, cancellation).
- Memory comes back: a server process (`modelserve serve`) that decoded bursts of 40 MP PNGs
  (each ~480 MB while decoded, 150 KB as a file) returns to within 20 % of its RSS before them.
- An empty batch is a clear 400 on every protocol, and no error message, of a refusal or of a
  model failure, shows TensorFlow's internal shapes, ops or tensors (they go to the log).

The machine may be busy: nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.core.cpu_limit import available_cpus
from service.settings import Settings
from service.tasks.image_decoding import PixelBudget
from tests.conftest import MODELS_DIR
from tests.saved_models import _save_atomically
from tests.server import error_message, free_port, grpc_target, running_server
from tests.test_cli_serve import serve_process, wait_ready

DIGITS = "/api/v1/digits"
# TensorFlow's words for a model's insides, as its messages print them: "Incompatible shapes:
# [64] vs. [0,14,14,32]", "[[{{node digits_1/...}}]]", "In[0]: [1,3]", "__inference_serve_331".
TF_INTERNALS = re.compile(
    r"Incompatible shapes|\[\d+(?:,\d+)+\]|\{\{|\bnode\b|\bIn\[\d\]|MatMul|_inference_"
    r"|ReadFile|No such file|/nonexistent",
    re.IGNORECASE,
)


def ring_png(width: int, height: int) -> bytes:
    """A "0" drawn as a dark ring on white, RGB: a few hundred KB of PNG, 3 bytes a pixel (and
    more while converted) once decoded."""
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).ellipse(
        (width // 3, height // 4, 2 * width // 3, 3 * height // 4),
        outline=0,
        width=max(2, width // 40),
    )
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def upload(client: httpx.Client, data: bytes, name: str = "big.png") -> httpx.Response:
    return client.post(DIGITS, files=[("file", (name, data, "image/png"))])


def gauges(client: httpx.Client) -> dict[str, float]:
    """The image decode gauges of /metrics (absent ones are absent)."""
    text = client.get("/metrics").text
    found = re.findall(r"^(modelserve_image_decode\w*) (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


def burst_peaks(url: str, data: bytes, requests: int) -> tuple[list[int], dict[str, float]]:
    """`requests` concurrent uploads of `data`; their statuses, and the highest value of each
    decode gauge seen by scraping /metrics while they ran."""
    peaks: dict[str, float] = {}
    done = threading.Event()

    def scrape() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not done.is_set():
                for name, value in gauges(client).items():
                    peaks[name] = max(peaks.get(name, 0.0), value)
                time.sleep(0.005)

    watcher = threading.Thread(target=scrape, daemon=True)
    watcher.start()
    with httpx.Client(base_url=url, timeout=300) as client, ThreadPoolExecutor(requests) as pool:
        statuses = [
            r.status_code
            for r in pool.map(lambda i: upload(client, data, f"{i}.png"), range(requests))
        ]
    done.set()
    watcher.join(timeout=60)
    return statuses, peaks


def digits_repo(base: Path) -> Path:
    repo = base / "repo"
    shutil.copytree(MODELS_DIR / "digits", repo / "digits")
    return repo


# --- decodes are bounded in number and in pixels ------------------------------------------

MEDIUM = (3000, 2000)  # 6 MP


@pytest.fixture(scope="module")
def medium_png() -> bytes:
    return ring_png(*MEDIUM)


def test_decodes_in_flight_never_exceed_the_thread_bound(tmp_path: Path, medium_png: bytes) -> None:
    settings = Settings(
        model_base_path=digits_repo(tmp_path), poll_interval_seconds=0, image_decode_threads=2
    )
    with running_server(settings, timeout=180) as url:
        statuses, peaks = burst_peaks(url, medium_png, requests=8)
        with httpx.Client(base_url=url) as client:
            after = gauges(client)
    assert statuses == [200] * 8
    assert "modelserve_image_decodes_in_flight" in peaks, f"no decode gauge in /metrics: {peaks}"
    assert 1 <= peaks["modelserve_image_decodes_in_flight"] <= 2, peaks
    assert after == {
        "modelserve_image_decodes_in_flight": 0.0,
        "modelserve_image_decode_pixels_in_flight": 0.0,
    }


def test_pixels_in_flight_never_exceed_the_budget(tmp_path: Path, medium_png: bytes) -> None:
    """Four threads, but a budget of one and a half images: they decode one at a time, and
    every request still gets its answer (waiting, not refused)."""
    pixels = MEDIUM[0] * MEDIUM[1]
    settings = Settings(
        model_base_path=digits_repo(tmp_path),
        poll_interval_seconds=0,
        image_decode_threads=4,
        max_image_pixels=pixels,
        max_decode_pixels=pixels * 3 // 2,
    )
    with running_server(settings, timeout=180) as url:
        statuses, peaks = burst_peaks(url, medium_png, requests=6)
    assert statuses == [200] * 6
    assert peaks.get("modelserve_image_decode_pixels_in_flight", 0) == pixels, peaks
    assert peaks["modelserve_image_decodes_in_flight"] == 1, peaks


def test_decode_threads_follow_the_container_cpu_limit() -> None:
    """Not os.cpu_count(): the node's CPUs (tests/test_cpu_limit.py covers the cgroup files)."""
    assert Settings().image_decode_threads == available_cpus()


def test_the_budget_must_hold_the_largest_image() -> None:
    with pytest.raises(ValueError, match="max_image_pixels"):
        Settings(max_image_pixels=1000, max_decode_pixels=999)
    assert Settings(max_image_pixels=1000).decode_pixel_budget == 4000


def test_pixel_budget_grants_in_order_within_deadlines() -> None:
    async def scenario() -> None:
        budget = PixelBudget(10)
        assert await budget.acquire(6, timeout=1)
        # 5 does not fit; 3 would, but waits behind it (no overtaking)
        big = asyncio.create_task(budget.acquire(5, timeout=60))
        small = asyncio.create_task(budget.acquire(3, timeout=60))
        await asyncio.sleep(0)
        assert not big.done() and not small.done()
        assert not await budget.acquire(1, timeout=0.01)  # deadline passed: refused
        budget.release(6)
        assert await big and await small
        assert budget.in_use == 8
        # a waiter cancelled leaves the queue, and whoever was behind it moves up
        blocked = asyncio.create_task(budget.acquire(9, timeout=60))
        behind = asyncio.create_task(budget.acquire(2, timeout=60))
        await asyncio.sleep(0)
        blocked.cancel()
        assert await behind
        assert budget.in_use == 10
        budget.release(5)
        budget.release(3)
        budget.release(2)
        assert budget.in_use == 0

    asyncio.run(scenario())


# --- memory comes back after a burst --------------------------------------------------------

HUGE = (8000, 5000)  # 40 MP: the default max_image_pixels
BURSTS, CONCURRENT = 3, 6


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_rss_returns_after_bursts_of_huge_images(tmp_path: Path) -> None:
    huge = ring_png(*HUGE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"MODELSERVE_PORT": str(port), "MODELSERVE_MODEL_BASE_PATH": str(digits_repo(tmp_path))}
    with serve_process("--host", "127.0.0.1", "--log-level", "warning", env=env) as process:
        wait_ready(url, process, timeout=180)
        with httpx.Client(base_url=url, timeout=300) as client:
            assert upload(client, ring_png(280, 280), "small.png").status_code == 200
        start = rss_mb(process.pid)
        peak = [start]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_mb(process.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for _ in range(BURSTS):
            statuses, _ = burst_peaks(url, huge, CONCURRENT)
            assert statuses == [200] * CONCURRENT
        done.set()
        watcher.join(timeout=10)
        # given back by the time the answers are out; a little time for a busy machine
        deadline = time.monotonic() + 30
        while (after := rss_mb(process.pid)) > 1.2 * start and time.monotonic() < deadline:
            time.sleep(0.5)
    print(f"\nRSS: {start:.0f} MB before, peak {peak[0]:.0f} MB, {after:.0f} MB after")
    assert after <= 1.2 * start, f"RSS {start:.0f} MB -> {after:.0f} MB (peak {peak[0]:.0f})"


# --- empty batches and model errors ---------------------------------------------------------

pytest_plugins = ["tests.gateway_fixtures"]


def v2_input(name: str, shape: list[int], datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": []}


EMPTY_V2 = [
    ("digits", v2_input("image", [0, 28, 28, 1], "FP32")),
    ("votes", v2_input("votes", [0, 16], "FP32")),
    ("sentiment", v2_input("text", [0], "BYTES")),
]
EMPTY_TFSERVING = [
    ("digits", {"instances": []}),
    ("votes", {"instances": []}),
    ("sentiment", {"instances": []}),
    ("digits", {"inputs": {"image": []}}),
    ("votes", {"inputs": {"votes": []}}),
    ("sentiment", {"inputs": {"text": []}}),
    ("sentiment", {"inputs": []}),
]
EMPTY_TASKS: list[tuple[str, dict[str, list[Any]]]] = [
    ("/api/v1/digits", {"images": []}),
    ("/api/v1/sentiment", {"texts": []}),
    ("/api/v1/party", {"votes": []}),
]


def clean(message: str) -> str:
    assert not TF_INTERNALS.search(message), f"TensorFlow internals in {message!r}"
    return message


@pytest.fixture(scope="module")
def shipped(shipped_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shipped_server, timeout=60) as client:
        yield client


@pytest.mark.parametrize(("model", "body"), EMPTY_TFSERVING)
def test_empty_batch_tfserving_rest(shipped: httpx.Client, model: str, body: Any) -> None:
    response = shipped.post(f"/v1/models/{model}:predict", json=body)
    clean(error_message(response, 400))


@pytest.mark.parametrize(("model", "tensor"), EMPTY_V2)
def test_empty_batch_v2_rest(shipped: httpx.Client, model: str, tensor: Any) -> None:
    response = shipped.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
    message = clean(error_message(response, 400))
    assert "empty batch" in message and tensor["name"] in message, message


@pytest.mark.parametrize(
    ("model", "name", "shape", "dtype"),
    [
        ("digits", "image", [0, 28, 28, 1], tf.float32),
        ("votes", "votes", [0, 16], tf.float32),
        ("sentiment", "text", [0], tf.string),
    ],
)
def test_empty_batch_grpc_predict(
    shipped_server: str, model: str, name: str, shape: list[int], dtype: tf.DType
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(tf.make_tensor_proto([], dtype=dtype, shape=shape))
    with grpc.insecure_channel(grpc_target(shipped_server)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = clean(raised.value.details())
    assert "empty batch" in message and name in message, message


@pytest.mark.parametrize(("path", "body"), EMPTY_TASKS)
def test_empty_batch_task_api(shipped: httpx.Client, path: str, body: Any) -> None:
    clean(error_message(shipped.post(path, json=body), 400))


def test_upload_without_files_task_api(shipped: httpx.Client) -> None:
    response = shipped.post(
        DIGITS, content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert "no files" in clean(error_message(response, 400))


# A model that fails inside: x > 100 reads a missing file (NotFoundError: a model failure,
# 500), x < -100 multiplies mismatched matrices (InvalidArgumentError: a refusal, 400). Both
# messages of TensorFlow name ops, shapes or paths.
MISSING = "/nonexistent/modelserve-test/weights.bin"


def export_faulty(base: Path) -> Path:
    class Faulty(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            read = tf.cond(
                tf.reduce_any(x > 100),
                lambda: tf.strings.length(tf.io.read_file(MISSING)),
                lambda: tf.constant(0),
            )
            product = tf.cond(
                tf.reduce_any(x < -100),
                lambda: tf.reduce_sum(
                    tf.matmul(tf.ones(tf.stack([1, tf.size(x) + 2])), tf.ones([4, 2]))
                ),
                lambda: tf.constant(0.0),
            )
            return {"y": x + tf.cast(read, tf.float32) + product}

    module = Faulty()
    return _save_atomically(module, {"serving_default": module.serve}, base, "faulty", 1)


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("faulty") / "repo"
    export_faulty(repo)
    with running_server(Settings(model_base_path=repo, poll_interval_seconds=0)) as url:
        yield url


@pytest.mark.parametrize(("x", "status"), [(1000.0, 500), (-1000.0, 400)])
def test_model_errors_name_no_internals_and_are_logged(
    faulty_server: str, caplog: pytest.LogCaptureFixture, x: float, status: int
) -> None:
    caplog.set_level(logging.WARNING, logger="service.core.runtime")
    with httpx.Client(base_url=faulty_server, timeout=60) as client:
        assert client.post("/v1/models/faulty:predict", json={"instances": [1.0]}).json() == {
            "predictions": [1.0]
        }
        rest = client.post("/v1/models/faulty:predict", json={"instances": [x]})
        v2 = client.post(
            "/v2/models/faulty/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [x]}]},
        )
    for response in (rest, v2):
        message = clean(error_message(response, status))
        assert "faulty" in message, message
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "faulty"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32)))
    with (
        grpc.insecure_channel(grpc_target(faulty_server)) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    clean(raised.value.details())
    # ... and the operator has TensorFlow's own words
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "service.core.runtime")
    assert (MISSING if status == 500 else "Matrix size-incompatible") in logged, logged
