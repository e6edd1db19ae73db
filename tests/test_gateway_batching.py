"""Dynamic batching through the real HTTP server: concurrent requests coalesce into batches
whose answers equal unbatched ones (affine fixture and the shipped `digits` model), a full
queue answers 429 with Retry-After, a queued request past its X-Request-Timeout gets 504, and
a client that gives up leaves the queue (`cancelled`) without the model running for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from service.settings import Settings
from tests.conftest import FIXTURES, MODELS_DIR
from tests.saved_models import copy_versions, write_config
from tests.server import error_message, running_server, wait_for
from training.digits import to_model_input

pytest_plugins = ["tests.gateway_fixtures"]

SIGNATURE = "serving_default"
SLOW_SECONDS = 0.35
"""Target duration of one call of the `slow` fixture model (calibrated on this machine)."""


# --- helpers ------------------------------------------------------------------------------


def version_overview(url: str, model: str) -> dict[str, Any]:
    """The (only) version of `model` in GET /api/v1/models."""
    response = httpx.get(f"{url}/api/v1/models", timeout=30)
    assert response.status_code == 200, response.text
    (entry,) = [m for m in response.json()["models"] if m["name"] == model]
    (version,) = entry["versions"]
    assert isinstance(version, dict)
    return version


def batch_stats(url: str, model: str) -> dict[str, Any]:
    """The default signature's batching counters (zeros before the first request)."""
    stats = version_overview(url, model).get("batching", {}).get(SIGNATURE)
    zeros = dict.fromkeys(("requests", "batches", "rows", "expired", "rejected", "cancelled"), 0)
    return stats if stats is not None else zeros


def post_concurrently(
    url: str,
    requests: list[tuple[str, dict[str, Any]]],
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """POSTs every (path, body) at once from one asyncio.gather; answers in request order."""

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *(client.post(path, json=body, headers=headers) for path, body in requests)
                )
            )

    return asyncio.run(send_all())


def predict_body(xs: list[float]) -> dict[str, Any]:
    return {"instances": xs}


def infer_body(xs: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(xs)], "datatype": "FP32", "data": xs}]}


def answer_of(response: httpx.Response) -> list[float]:
    """The `y` values of a TF Serving :predict or a V2 infer answer."""
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    body = response.json()
    if "predictions" in body:
        values: list[float] = body["predictions"]
        return values
    (output,) = body["outputs"]
    assert output["name"] == "y", output
    data: list[float] = output["data"]
    return data


# --- a deliberately slow model -----------------------------------------------------------


class _Slow(tf.Module):
    """`serving_default`: x float32 [None] -> y = 2x, after a loop of `iterations` 256x256
    matrix multiplications (the result feeds y times zero, so the loop cannot be pruned)."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = tf.Variable(iterations, dtype=tf.int32, name="iterations")
        self.weights = tf.Variable(
            tf.random.stateless_normal([256, 256], seed=[1, 2]) * 0.05, name="weights"
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        def body(i: tf.Tensor, m: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.tanh(tf.matmul(m, self.weights))

        start = tf.eye(256) + 0.0 * tf.reduce_sum(x)
        _, m = tf.while_loop(lambda i, _: i < self.iterations, body, (tf.constant(0), start))
        return {"y": 2.0 * x + 0.0 * tf.reduce_mean(m)}


def export_slow(base: Path, name: str, seconds: float = SLOW_SECONDS) -> Path:
    """<base>/<name>/1: a `_Slow` whose one call takes about `seconds` on this machine."""
    module = _Slow(200)
    one = tf.constant([1.0])
    module.serve(one)  # trace
    began = time.perf_counter()
    module.serve(one)
    per_iteration = max((time.perf_counter() - began) / 200, 1e-6)
    module.iterations.assign(int(min(max(seconds / per_iteration, 200), 200_000)))
    began = time.perf_counter()
    module.serve(one)
    assert time.perf_counter() - began > seconds / 4, "slow model calibration failed"
    path = base / name / "1"
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})
    return path


# --- servers -------------------------------------------------------------------------------

PLUS_SLOPE, PLUS_OFFSET = 0.5, 2.0  # version 1 of the library's `plus`


def plus(xs: list[float]) -> list[float]:
    return [PLUS_SLOPE * x + PLUS_OFFSET for x in xs]


@pytest.fixture(scope="module")
def batching_server(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """- plus: affine (y = 0.5x + 2), default batching (max_batch_size 32, no delay);
    - plus_unbatched: the same model, `batching: {enabled: false}`;
    - plus_tight: the same model, max_batch_size 1, max_queue_size 1 and max_queue_rows 4;
    - digits: the shipped model, batching with a 100 ms delay (so 10 concurrent requests
      surely share batches, padded to 16);
    - digits_unbatched: the shipped model, `batching: {enabled: false}`."""
    root = tmp_path_factory.mktemp("batching")
    repo = root / "repo"
    for name in ("plus", "plus_unbatched", "plus_tight"):
        copy_versions(model_library, repo / name, "plus", [1])
    digits = str(MODELS_DIR / "digits")
    config = write_config(
        root / "serving.yaml",
        [
            {"name": "plus"},
            {"name": "plus_unbatched", "batching": {"enabled": False}},
            {
                "name": "plus_tight",
                "batching": {"max_batch_size": 1, "max_queue_size": 1, "max_queue_rows": 4},
            },
            {"name": "digits", "base_path": digits, "batching": {"max_batch_delay_ms": 100}},
            {"name": "digits_unbatched", "base_path": digits, "batching": {"enabled": False}},
        ],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=180) as url:
        yield url


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """- slow: y = 2x in about SLOW_SECONDS, max_batch_size 1, max_queue_size 1;
    - slowq: the same model, max_batch_size 1, max_queue_size 64 (requests queue behind)."""
    root = tmp_path_factory.mktemp("slow")
    repo = root / "repo"
    export_slow(repo, "slow")
    copy_versions(repo, repo / "slowq", "slow")
    one_at_a_time = {"max_batch_size": 1}
    config = write_config(
        root / "serving.yaml",
        [
            {"name": "slow", "batching": {**one_at_a_time, "max_queue_size": 1}},
            {"name": "slowq", "batching": {**one_at_a_time, "max_queue_size": 64}},
        ],
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=120) as url:
        yield url


# --- coalescing: batched answers equal unbatched ones --------------------------------------


def concurrent_plus_requests(model: str) -> list[tuple[str, dict[str, Any]]]:
    """200 requests of 1 to 3 instances (x values exact in float32, so are the answers), every
    fourth one over the V2 protocol (both protocols share the model's batcher)."""
    requests = []
    for i in range(200):
        xs = [i * 0.25 + k for k in range(1 + i % 3)]
        if i % 4 == 3:
            requests.append((f"/v2/models/{model}/infer", infer_body(xs)))
        else:
            requests.append((f"/v1/models/{model}:predict", predict_body(xs)))
    return requests


def sent_xs(body: dict[str, Any]) -> list[float]:
    xs: list[float] = body["instances"] if "instances" in body else body["inputs"][0]["data"]
    return xs


def test_concurrent_requests_are_batched_and_answer_as_unbatched(batching_server: str) -> None:
    before = batch_stats(batching_server, "plus")
    requests = concurrent_plus_requests("plus")
    batched = post_concurrently(batching_server, requests)
    unbatched = post_concurrently(batching_server, concurrent_plus_requests("plus_unbatched"))

    for (path, body), answer, reference in zip(requests, batched, unbatched, strict=True):
        xs = sent_xs(body)
        assert answer_of(answer) == plus(xs), f"{path} {xs}"
        assert answer_of(answer) == answer_of(reference), f"{path} {xs}"

    instances_sent = sum(len(sent_xs(body)) for _, body in requests)
    after = batch_stats(batching_server, "plus")
    requests_counted = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests_counted == len(requests), after
    assert after["rows"] - before["rows"] == instances_sent, after
    assert 0 < batches < len(requests), after
    assert after["mean_batch_size"] > 1, after
    assert after["mean_batch_size"] == pytest.approx(after["rows"] / after["batches"], abs=1e-3)
    assert sum(after["dispatch_reasons"].values()) == after["batches"], after
    assert after["expired"] == after["rejected"] == after["cancelled"] == 0, after
    (instance,) = version_overview(batching_server, "plus")["instances"]
    assert instance["batches"] == after["batches"], instance


def test_unbatched_model_runs_each_request_alone_and_counts_it(batching_server: str) -> None:
    """`batching: {enabled: false}`: one model call per request; the counters still count every
    request and every row (instance) run, as they do with batching on."""
    before = batch_stats(batching_server, "plus_unbatched")
    requests = [("/v1/models/plus_unbatched:predict", predict_body([1.0, 2.0, 3.0]))] * 5
    for answer in post_concurrently(batching_server, requests):
        assert answer_of(answer) == plus([1.0, 2.0, 3.0])
    after = batch_stats(batching_server, "plus_unbatched")
    assert after["enabled"] is False, after
    counted = {key: after[key] - before[key] for key in ("batches", "requests", "rows")}
    assert counted == {"batches": 5, "requests": 5, "rows": 15}, after


def digit_images() -> tuple[list[np.ndarray], list[int]]:
    pngs = sorted((FIXTURES / "mnist").glob("*.png"))
    assert len(pngs) == 10
    images = [to_model_input(np.asarray(Image.open(p).convert("L"))[None])[0] for p in pngs]
    labels = [int(p.stem.rsplit("label", 1)[1]) for p in pngs]
    return images, labels


def test_shipped_digits_batched_equals_unbatched(batching_server: str) -> None:
    images, labels = digit_images()
    before = batch_stats(batching_server, "digits")
    requests = [("/v1/models/digits:predict", {"instances": [image.tolist()]}) for image in images]
    batched = post_concurrently(batching_server, requests)
    after = batch_stats(batching_server, "digits")

    with httpx.Client(base_url=batching_server, timeout=60) as client:
        for image, label, answer in zip(images, labels, batched, strict=True):
            alone = client.post(
                "/v1/models/digits_unbatched:predict", json={"instances": [image.tolist()]}
            )
            assert alone.status_code == 200, alone.text
            (expected,) = alone.json()["predictions"]
            assert answer.status_code == 200, answer.text
            (probabilities,) = answer.json()["predictions"]
            assert len(probabilities) == 10
            np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
            assert int(np.argmax(probabilities)) == int(np.argmax(expected)) == label

    # the comparison above really involved batched model calls
    assert after["requests"] - before["requests"] == 10, after
    assert after["rows"] - before["rows"] == 10, after
    assert after["batches"] - before["batches"] < 10, after
    assert after["mean_batch_size"] > 1, after


def test_a_request_larger_than_the_queue_still_runs(batching_server: str) -> None:
    """plus_tight (max_batch_size 1, max_queue_size 1; max_queue_rows 4, so one request may
    have 2 rows), idle: a request of 2 instances is split into 2 chunks of 1 row. It is one
    request, so it must not be rejected as if 2 requests were waiting (a 429 saying "retry
    shortly" when no retry can ever succeed)."""
    response = httpx.post(
        f"{batching_server}/v1/models/plus_tight:predict",
        json=predict_body([1.0, 2.0]),
        timeout=30,
    )
    assert answer_of(response) == plus([1.0, 2.0])


# --- load shedding: full queue, deadlines, clients that leave ------------------------------


def slow_request(url: str, model: str, x: float, **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/{model}:predict", json=predict_body([x]), timeout=60, **kwargs
    )


def test_full_queue_answers_429_with_retry_after(slow_server: str) -> None:
    before = batch_stats(slow_server, "slow")
    requests = [("/v1/models/slow:predict", predict_body([float(i)])) for i in range(10)]
    responses = post_concurrently(slow_server, requests)

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    rejected = [r for r in responses if r.status_code == 429]
    served = [
        (body, r) for (_, body), r in zip(requests, responses, strict=True) if r.status_code == 200
    ]
    assert rejected, statuses
    assert served, statuses
    for response in rejected:
        assert "queue" in error_message(response, 429)
        assert int(response.headers["Retry-After"]) >= 1, response.headers
    for body, response in served:
        assert answer_of(response) == [2.0 * x for x in sent_xs(body)]
    # rejected at once, not after waiting for the model
    assert max(r.elapsed for r in rejected) < max(r.elapsed for _, r in served)

    after = batch_stats(slow_server, "slow")
    assert after["rejected"] - before["rejected"] == len(rejected), after
    assert after["rows"] - before["rows"] == len(served), after
    # and the server still serves
    assert answer_of(slow_request(slow_server, "slow", 21.0)) == [42.0]


def start_blockers(url: str, pool: ThreadPoolExecutor, count: int) -> list[Future[httpx.Response]]:
    """`count` requests on slowq; returns once the first is running on the model (each takes
    about SLOW_SECONDS, one at a time), so later requests queue behind the rest."""
    started = batch_stats(url, "slowq")["batches"]
    blockers = [pool.submit(slow_request, url, "slowq", 100.0 + i) for i in range(count)]
    wait_for(
        lambda: batch_stats(url, "slowq")["batches"] > started,
        timeout=30,
        what="the first blocking request to run",
        interval=0.01,
    )
    return blockers


def check_blockers(blockers: list[Future[httpx.Response]]) -> None:
    for i, blocker in enumerate(blockers):
        assert answer_of(blocker.result(timeout=60)) == [2.0 * (100.0 + i)]


def test_deadline_passed_while_queued_answers_504(slow_server: str) -> None:
    before = batch_stats(slow_server, "slowq")
    with ThreadPoolExecutor(8) as pool:
        blockers = start_blockers(slow_server, pool, 2)
        late = [
            pool.submit(
                slow_request, slow_server, "slowq", 7.0, headers={"X-Request-Timeout": "50"}
            )
            for _ in range(3)
        ]
        for future in late:
            message = error_message(future.result(timeout=60), 504)
            assert "deadline" in message, message
        check_blockers(blockers)
    after = batch_stats(slow_server, "slowq")
    assert after["expired"] - before["expired"] == 3, after
    assert after["rows"] - before["rows"] == 2, after  # the expired ones never ran
    # a generous deadline is honoured like no deadline
    fine = slow_request(slow_server, "slowq", 3.0, headers={"X-Request-Timeout": "60000"})
    assert answer_of(fine) == [6.0]


@pytest.mark.parametrize("value", ["soon", "0", "-50", "nan", "1e12"])
def test_invalid_request_timeout_header_answers_400(slow_server: str, value: str) -> None:
    before = batch_stats(slow_server, "slowq")
    response = slow_request(slow_server, "slowq", 1.0, headers={"X-Request-Timeout": value})
    assert "X-Request-Timeout" in error_message(response, 400)
    v2 = httpx.post(
        f"{slow_server}/v2/models/slowq/infer",
        json=infer_body([1.0]),
        headers={"X-Request-Timeout": value},
        timeout=60,
    )
    assert "X-Request-Timeout" in error_message(v2, 400)
    assert batch_stats(slow_server, "slowq")["rows"] == before["rows"]  # the model never ran


def test_client_that_gives_up_leaves_the_queue(slow_server: str) -> None:
    """modelserve's protocol notices the lost connection and cancels the request's wait."""
    check_gone_client_leaves_the_queue(slow_server)


def test_client_that_gives_up_leaves_the_queue_under_another_asgi_server(
    tmp_path: Path,
) -> None:
    """Without that notice (uvicorn's own protocol), a watch on the ASGI messages does it."""
    repo = tmp_path / "repo"
    export_slow(repo, "slowq")
    config = write_config(
        tmp_path / "serving.yaml", [{"name": "slowq", "batching": {"max_batch_size": 1}}]
    )
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=120, stock_protocol=True) as url:
        check_gone_client_leaves_the_queue(url)


def check_gone_client_leaves_the_queue(url: str) -> None:
    before = batch_stats(url, "slowq")
    with ThreadPoolExecutor(4) as pool:
        blockers = start_blockers(url, pool, 2)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/v1/models/slowq:predict", json=predict_body([5.0]), timeout=0.05)
        wait_for(
            lambda: batch_stats(url, "slowq")["cancelled"] > before["cancelled"],
            timeout=30,
            what="the server to count the cancelled request",
        )
        check_blockers(blockers)
    assert answer_of(slow_request(url, "slowq", 4.0)) == [8.0]
    after = batch_stats(url, "slowq")
    assert after["cancelled"] - before["cancelled"] == 1, after
    assert after["rows"] - before["rows"] == 3, after  # 2 blockers and the last: not the gone one
    assert after["queued"] == 0, after
