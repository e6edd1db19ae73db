"""A model served by a remote gRPC backend (`backend:` in the serving config): one modelserve
instance (the gateway) fronting a second one (the backend) started by the test.

The gateway keeps the protocols, the task API and batching; the backend runs the model. Its
answers must equal the backend's own, bit for bit; a backend that goes away makes the model
unready and its requests 503, and a backend that comes back is served again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.core.batching import ModelCall
from service.core.layout import existing_versions
from service.core.remote import RemoteBackend
from service.core.serving_config import BackendConfig
from service.errors import DeadlineExceededError, InvalidInputError
from service.settings import Settings
from tests.conftest import FIXTURES, MODELS_DIR, shipped_version
from tests.saved_models import copy_versions, write_config
from tests.server import free_port, grpc_target, running_server, wait_for
from tests.test_metrics import scrape

VOTES_VERSION = existing_versions(MODELS_DIR / "votes")[-1]
VOTES_ROW = [-1, 1, -1, 1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1]
SEVEN = FIXTURES / "mnist" / "test0000_label7.png"

pytest_plugins = ["tests.gateway_fixtures"]


class Backend:
    """The shipped models on a fixed gRPC port, so a restarted backend is found again."""

    def __init__(self) -> None:
        self.grpc_port = free_port()
        self.url = ""
        self._stack = ExitStack()

    def start(self) -> None:
        settings = Settings(
            model_base_path=MODELS_DIR,
            poll_interval_seconds=0,
            host="127.0.0.1",
            grpc_port=self.grpc_port,
        )
        self.url = self._stack.enter_context(running_server(settings, timeout=180))

    def stop(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    backend = Backend()
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gateway(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("gateway")
    address = f"127.0.0.1:{backend.grpc_port}"
    config = write_config(
        root / "serving.yaml",
        [
            {
                "name": "digits",
                "backend": {
                    "grpc": address,
                    "assets": str(MODELS_DIR / "digits" / str(shipped_version("digits"))),
                },
            },
            {"name": "party", "backend": {"grpc": address, "model_name": "votes"}},
            {"name": "sentiment", "backend": {"grpc": address}},
        ],
    )
    settings = Settings(model_base_path=root, config=config, poll_interval_seconds=0.2)
    with running_server(settings, timeout=120) as url:
        yield url


def predict(url: str, model: str, instances: list[object]) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{model}:predict", json={"instances": instances}, timeout=60)


def test_answers_equal_the_backend_own_bit_for_bit(backend: Backend, gateway: str) -> None:
    digit = (np.asarray(tf.io.decode_png(SEVEN.read_bytes()), np.float32) / 255).tolist()
    cases = [
        ("party", "votes", [VOTES_ROW]),
        ("sentiment", "sentiment", ["A moving, beautiful film.", "Dull and far too long."]),
        ("digits", "digits", [digit]),
    ]
    for served_as, name, instances in cases:
        through_gateway = predict(gateway, served_as, instances)
        direct = predict(backend.url, name, instances)
        assert through_gateway.status_code == 200, through_gateway.text
        assert through_gateway.json() == direct.json(), served_as


def test_task_api_and_v2_through_the_backend(gateway: str) -> None:
    with SEVEN.open("rb") as image:
        answer = httpx.post(f"{gateway}/api/v1/digits", files={"file": image}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["digit"] == 7
    infer = {"inputs": [{"name": "votes", "shape": [1, 16], "datatype": "FP32", "data": VOTES_ROW}]}
    v2 = httpx.post(f"{gateway}/v2/models/party/infer", json=infer, timeout=60)
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"][1] > 0.9  # the first UCI row: a republican


def test_grpc_through_the_gateway_names_the_gateway_model(gateway: str) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "party"
    request.inputs["votes"].CopyFrom(tf.make_tensor_proto(np.array([VOTES_ROW], np.float32)))
    with grpc.insecure_channel(grpc_target(gateway)) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
    assert response.model_spec.name == "party"
    assert response.model_spec.version.value == VOTES_VERSION
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 2)


def test_metadata_and_placement_come_from_the_backend(backend: Backend, gateway: str) -> None:
    through_gateway = httpx.get(f"{gateway}/v1/models/party/metadata").json()
    direct = httpx.get(f"{backend.url}/v1/models/votes/metadata").json()
    assert through_gateway["metadata"] == direct["metadata"]
    overview = httpx.get(f"{gateway}/api/v1/models").json()["models"]
    devices = {m["name"]: m["versions"][0]["instances"][0]["device"] for m in overview}
    assert devices["party"] == f"grpc://127.0.0.1:{backend.grpc_port}"


def test_invalid_input_is_400_before_the_backend(gateway: str) -> None:
    response = predict(gateway, "party", [[1, 2, 3]])
    assert response.status_code == 400
    assert "votes" in response.json()["error"]


def test_a_backend_outage_flips_readiness_and_recovers(backend: Backend, gateway: str) -> None:
    assert httpx.get(f"{gateway}/readyz").status_code == 200
    backend.stop()
    try:
        wait_for(
            lambda: httpx.get(f"{gateway}/readyz").status_code == 503,
            timeout=30,
            what="the gateway to notice the backend is gone",
        )
        down = predict(gateway, "party", [VOTES_ROW])
        assert down.status_code == 503, down.text
        assert f"127.0.0.1:{backend.grpc_port}" in down.json()["error"]
        readiness = httpx.get(f"{gateway}/readyz").json()["models"]
        assert readiness == {"digits": False, "party": False, "sentiment": False}
    finally:
        backend.start()
    started = time.monotonic()
    wait_for(
        lambda: httpx.get(f"{gateway}/readyz").status_code == 200,
        timeout=60,
        what="the gateway to serve the restarted backend",
    )
    assert time.monotonic() - started < 30
    again = predict(gateway, "party", [VOTES_ROW])
    assert again.status_code == 200, again.text


def test_backend_config_is_validated(tmp_path: Path) -> None:
    from service.core.serving_config import ServingConfigError, load_serving_config

    config = write_config(
        tmp_path / "serving.yaml", [{"name": "x", "backend": {"grpc": "no-port"}}]
    )
    with pytest.raises(ServingConfigError, match="host:port"):
        load_serving_config(config, tmp_path)


def test_the_batch_deadline_is_the_backend_call_deadline(backend: Backend) -> None:
    """A batch runs with the time its requests have left (`seconds_left`), capped by the
    configured `timeout_ms`: none left means the backend call fails at once with 504."""
    config = BackendConfig(grpc=f"127.0.0.1:{backend.grpc_port}", model_name="votes")
    remote = RemoteBackend("party", config, max_message_bytes=1 << 20)
    try:
        (runner,) = remote.load(VOTES_VERSION, instances=1)
        inputs = {"votes": np.array([VOTES_ROW], np.float32)}
        answered = runner.run(ModelCall("serving_default", inputs, seconds_left=10.0))
        assert answered["probabilities"].shape == (1, 2)
        with pytest.raises(DeadlineExceededError, match="DEADLINE_EXCEEDED"):
            runner.run(ModelCall("serving_default", inputs, seconds_left=0.0))
    finally:
        remote.close()


class RefusingBackend(prediction_service_pb2_grpc.PredictionServiceServicer):
    """A TF Serving stand-in whose Predict refuses with the given details."""

    def __init__(self, details: str) -> None:
        self.details = details

    def Predict(self, request: object, context: grpc.ServicerContext) -> None:  # noqa: N802
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.details)


@pytest.mark.parametrize(
    ("details", "sent"),
    [
        ("Incompatible shapes: [64] vs. [0,14,14,32]", False),
        ("In[0] mismatch In[1] shape: 3 vs. 784: [1,3] [784,128] 0 0", False),
        ("assertion failed: [x must be positive]", True),
        ("Unknown image file format. One of JPEG, PNG, GIF, BMP required.", True),
    ],
    ids=["shapes", "matmul", "assertion", "input"],
)
def test_a_backend_refusal_naming_internals_is_logged_not_sent(
    details: str, sent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """TF Serving's messages name the model's tensors and shapes: the client reads only
    what speaks of its input; the operator finds the rest in the log."""
    server = grpc.server(ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        RefusingBackend(details), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    remote = RemoteBackend("m", BackendConfig(grpc=f"127.0.0.1:{port}"), max_message_bytes=1 << 20)
    try:
        with pytest.raises(InvalidInputError) as refused:
            remote.predict(1, "serving_default", {"x": np.zeros(3, np.float32)})
    finally:
        remote.close()
        server.stop(None)
    message = refused.value.message
    assert "INVALID_ARGUMENT" in message, message
    logged = " ".join(record.getMessage() for record in caplog.records)
    if sent:
        assert details.removeprefix("assertion failed: ").strip("[]") in message, message
        assert details not in logged
    else:
        assert details not in message and "[" not in message, message
        assert "in the gateway log" in message, message
        assert details in logged, logged


def test_classify_and_regress_run_on_the_backend(model_library: Path, tmp_path: Path) -> None:
    """Method names come with the backend's metadata, so a tf.Example signature behind a
    gateway serves :classify / :regress (the backend runs it as a Predict)."""
    copy_versions(model_library, tmp_path / "backend" / "examples", "examples")
    backend = Settings(model_base_path=tmp_path / "backend", poll_interval_seconds=0)
    with running_server(backend) as backend_url:
        address = grpc_target(backend_url)
        config = write_config(
            tmp_path / "gateway.yaml",
            [{"name": "tabular", "backend": {"grpc": address, "model_name": "examples"}}],
        )
        gateway = Settings(model_base_path=tmp_path, config=config, poll_interval_seconds=0)
        with running_server(gateway) as gateway_url:
            for verb, signature in [("classify", "classify"), ("regress", "regress")]:
                body = {
                    "signature_name": signature,
                    "examples": [{"x": 1.5}, {"x": 2.0, "bias": 1}],
                }
                through_gateway = httpx.post(f"{gateway_url}/v1/models/tabular:{verb}", json=body)
                direct = httpx.post(f"{backend_url}/v1/models/examples:{verb}", json=body)
                assert through_gateway.status_code == 200, through_gateway.text
                assert through_gateway.json() == direct.json()
            wrong = httpx.post(
                f"{gateway_url}/v1/models/tabular:classify", json={"examples": [{"x": 1.0}]}
            )
            assert wrong.status_code == 400 and "classify_scores" in wrong.json()["error"]


def test_batches_are_spread_over_every_backend_address(model_library: Path, tmp_path: Path) -> None:
    """A target naming several addresses (as a headless Service's DNS name resolves to every
    pod) gets batches round-robin: each of two backends runs about half."""
    copy_versions(model_library, tmp_path / "backend" / "examples", "examples")
    backend = Settings(model_base_path=tmp_path / "backend", poll_interval_seconds=0)
    with running_server(backend) as first, running_server(backend) as second:
        target = f"ipv4:{grpc_target(first)},{grpc_target(second)}"
        entry = {"name": "examples", "backend": {"grpc": target}}
        config = write_config(tmp_path / "gateway.yaml", [entry])
        gateway = Settings(model_base_path=tmp_path, config=config, poll_interval_seconds=0)
        with running_server(gateway) as gateway_url:
            body = {"signature_name": "regress", "examples": [{"x": 1.0}]}
            for _ in range(20):
                answer = httpx.post(f"{gateway_url}/v1/models/examples:regress", json=body)
                assert answer.status_code == 200, answer.text
        route = "/tensorflow.serving.PredictionService/Predict"
        predicts = [
            scrape(url).value(
                "modelserve_requests_total",
                model="examples",
                protocol="grpc",
                route=route,
                code="OK",
            )
            for url in (first, second)
        ]
    assert sum(predicts) == 20 and min(predicts) >= 5, predicts
