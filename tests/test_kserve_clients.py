"""KServe's own Python SDK (kserve 0.21: InferenceRESTClient with the V2 and V1 protocols,
InferenceGRPCClient, InferRequest / InferInput) against a real server, in the SDK's venv
(tests/clients/kserve_clients.py): what it gets must equal plain V2 JSON (and TF Serving REST)
requests made here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.client_answers import MULTI_INPUTS, latin1, run_client, v2_tensors
from tests.conftest import REPO_ROOT
from tests.kserve_venv import kserve_python
from tests.server import error_message, grpc_target, ok_json

pytest_plugins = ["tests.gateway_fixtures"]

SCRIPT = REPO_ROOT / "tests" / "clients" / "kserve_clients.py"
UTF8_TEXT = ["abc", "h\u00e9"]
ANY_BYTES = [b"abc", "h\u00e9".encode(), b"\xff\x00z"]


def run_kserve_clients(server: str) -> dict[str, Any]:
    python = kserve_python("whose inference clients this test drives")
    # -I: the script's imports come from the SDK's venv only (not this repository)
    return run_client([str(python), "-I", str(SCRIPT), server, grpc_target(server)], 180)


@pytest.fixture(scope="module")
def kserve_answers(protocol_server: str) -> Callable[[], dict[str, Any]]:
    """What the SDK's clients got from the protocol server (`server`): the script runs once for
    the module, when a test first asks (in the test, so a missing venv fails it, not its setup)."""
    answers: dict[str, Any] = {}

    def get() -> dict[str, Any]:
        if not answers:
            answers.update(run_kserve_clients(protocol_server))
        return answers

    return get


def text_inputs(values: list[str]) -> list[dict[str, Any]]:
    return [{"name": "text", "datatype": "BYTES", "shape": [len(values)], "data": values}]


def test_kserve_sdk_clients_answer_as_plain_v2_json(
    kserve_answers: Callable[[], dict[str, Any]], client: httpx.Client
) -> None:
    got = kserve_answers()
    rest, grpc = got["rest"], got["grpc"]

    multi = v2_tensors(client, "/v2/models/multi/infer", MULTI_INPUTS)
    assert multi["sum"]["data"] == [2, 3, 4, 6, 7, 8]  # features + shift per row
    for variant in ("multi_json", "multi_binary", "multi_binary_in"):
        assert rest[variant] == multi, variant
    for variant in ("multi_raw", "multi_typed"):
        assert grpc[variant] == multi, variant
    assert grpc["multi_sum_only"] == {"sum": multi["sum"]}
    assert got["concurrent"] == [multi] * 8

    # binary outputs came binary: after a JSON header whose length the answer names
    assert rest["binary_answer_header"] is not None and int(rest["binary_answer_header"]) > 0
    assert rest["json_answer_header"] is None
    assert rest["subset_answer_header"] is not None  # `upper` asked for as binary

    text = v2_tensors(client, "/v2/models/text/infer", text_inputs(UTF8_TEXT))
    assert text["echo_bytes"]["data"] == [latin1(v) for v in UTF8_TEXT]
    assert text["length"]["data"] == [3, 3]
    for variant in ("text_json", "text_binary"):
        assert rest[variant] == text, variant
    assert grpc["text_typed"] == text
    assert rest["text_subset"] == {name: text[name] for name in ("upper", "length")}
    # any bytes over gRPC raw contents (the REST client reads UTF-8 only, see the script)
    raw = [value.decode("latin-1") for value in ANY_BYTES]
    assert grpc["text_raw"]["echo_bytes"] == {"datatype": "BYTES", "shape": [3], "data": raw}
    upper = [value.upper().decode("latin-1") for value in ANY_BYTES]  # ASCII letters only
    assert grpc["text_raw"]["upper"]["data"] == upper
    assert grpc["text_raw"]["length"]["data"] == [3, 3, 3]

    dtypes = v2_tensors(client, "/v2/models/dtypes/infer", got["dtypes_sent"])
    for tensor in got["dtypes_sent"]:  # identities: each output is its input
        output = dtypes[tensor["name"].replace("x_", "y_", 1)]
        assert output == {key: tensor[key] for key in ("datatype", "shape", "data")}
    assert rest["dtypes_binary"] == dtypes
    assert grpc["dtypes_raw"] == dtypes

    for version in ("1", "2"):
        path = f"/v2/models/plus/versions/{version}/infer"
        x = [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]
        assert grpc["plus"][version] == {
            "model_version": version,
            "outputs": v2_tensors(client, path, x),
        }
    assert grpc["plus"]["1"] != grpc["plus"]["2"]
    assert rest["plus_id"] == "kserve-rest-1" and grpc["plus_id"] == "kserve-grpc-1"


def test_kserve_sdk_readiness_metadata_and_errors(
    kserve_answers: Callable[[], dict[str, Any]], client: httpx.Client
) -> None:
    got = kserve_answers()
    rest, grpc = got["rest"], got["grpc"]
    for protocol in (rest, grpc):
        assert protocol["live"] is True and protocol["ready"] is True
        assert protocol["multi_ready"] is True
    assert rest["unknown_ready"] is False  # the SDK reads a 404 as not ready
    assert grpc["unknown_ready"]["status"] == "NOT_FOUND"

    server_metadata = ok_json(client.get("/v2"))
    assert rest["server_metadata"] == server_metadata == grpc["server_metadata"]
    multi_metadata = ok_json(client.get("/v2/models/multi"))
    assert rest["multi_metadata"] == multi_metadata == grpc["multi_metadata"]
    assert grpc["plus_1_metadata"] == ok_json(client.get("/v2/models/plus/versions/1"))

    unknown = error_message(client.post("/v2/models/nope/infer", json={"inputs": []}), 404)
    wrong = [{**MULTI_INPUTS[0], "datatype": "INT32"}, MULTI_INPUTS[1]]
    wrong_type = error_message(client.post("/v2/models/multi/infer", json={"inputs": wrong}), 400)
    assert rest["unknown_model"]["status"] == 404
    assert rest["unknown_model"]["message"].startswith(unknown)
    assert rest["wrong_datatype"]["status"] == 400
    assert rest["wrong_datatype"]["message"].startswith(wrong_type)
    assert grpc["unknown_model"] == {"status": "NOT_FOUND", "message": unknown}
    assert grpc["wrong_datatype"] == {"status": "INVALID_ARGUMENT", "message": wrong_type}


def test_kserve_sdk_v1_protocol_is_tf_serving_predict(
    kserve_answers: Callable[[], dict[str, Any]], client: httpx.Client
) -> None:
    """The SDK's V1 protocol posts its dict to /v1/models/{m}:predict and returns the JSON."""
    v1 = kserve_answers()["v1"]
    for model in ("plus", "multi", "text"):
        sent = v1["sent"][model]
        assert v1[model] == ok_json(client.post(f"/v1/models/{model}:predict", json=sent)), model
    assert v1["plus"] == {"predictions": [3.5, 4.0, 5.5]}  # the newest version, 2: x / 2 + 3
    assert [row["sum"] for row in v1["multi"]["predictions"]] == [[2, 3, 4], [6, 7, 8]]
    assert [row["upper"] for row in v1["text"]["predictions"]] == ["ABC", "H\u00e9"]
    unknown = error_message(client.post("/v1/models/nope:predict", json=v1["sent"]["plus"]), 404)
    assert v1["unknown_model"]["status"] == 404
    assert v1["unknown_model"]["message"].startswith(unknown)
