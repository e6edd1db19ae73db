"""Clients no one here wrote, with their defaults, against a real server, each in a process of
its own: Triton's `tritonclient.http` (sync and asyncio; binary tensors both ways) and
`tritonclient.grpc` (sync and asyncio; raw contents) answer the same as plain V2 JSON requests.
KServe's SDK clients: tests/test_kserve_clients.py."""

from __future__ import annotations

import sys
from typing import Any

import httpx
from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from tests.client_answers import MULTI_INPUTS, run_client, v2_tensors
from tests.server import error_message, grpc_target, ok_json

pytest_plugins = ["tests.gateway_fixtures"]


def run_module(module: str, address: str) -> dict[str, Any]:
    """`python -m module address` (HOST:PORT); what it printed last, as JSON."""
    return run_client([sys.executable, "-m", module, address])


def json_outputs(client: httpx.Client, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    body = ok_json(client.post(f"/v2/models/{model}/infer", json={"inputs": inputs}))
    return {output["name"]: output["data"] for output in body["outputs"]}


def test_tritonclient_http_with_its_defaults(server: str, client: httpx.Client) -> None:
    got = run_module("tests.clients.tritonclient_http", server.removeprefix("http://"))
    assert got["live"] is True and got["ready"] is True
    assert "binary_tensor_data" in got["extensions"]
    assert got["multi_config"] == ok_json(client.get("/v2/models/multi/config"))

    multi = json_outputs(
        client,
        "multi",
        [
            {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
            {"name": "shift", "datatype": "INT32", "shape": [2], "data": [1, 2]},
        ],
    )
    assert set(multi) == set(got["multi_outputs"])
    for variant in ("multi_binary", "multi_json", "multi_async"):
        assert got[variant] == multi, variant

    sent = [b"abc", "h\u00e9".encode(), b"\xff\x00z"]
    texts = [value.decode("latin-1") for value in sent]  # as the script prints bytes
    assert got["text"]["echo_bytes"] == texts
    assert got["text"]["length"] == [3, 3, 3]
    assert set(got["text"]) == set(got["text_outputs"])


def as_protobuf_json(message: Any, rest: dict[str, Any]) -> dict[str, Any]:
    """A REST answer in the protobuf JSON form tritonclient's gRPC `as_json=True` gives (64-bit
    integers as strings, defaults left out), through the gRPC message of the same meaning."""
    parsed = json_format.ParseDict(rest, message)
    return dict(json_format.MessageToDict(parsed, preserving_proto_field_name=True))


def count(stats: dict[str, Any], *path: str) -> int:
    """An int64 counter of a statistics answer in protobuf JSON (a string; absent when 0)."""
    value: Any = stats
    for key in path:
        value = value.get(key, {})
    return int(value or 0)


def test_tritonclient_grpc_with_its_defaults(server: str, client: httpx.Client) -> None:
    got = run_module("tests.clients.tritonclient_grpc", grpc_target(server))
    # right after the script, before this test's own requests: the counts the script left
    rest_stats = ok_json(client.get("/v2/models/multi/stats"))
    assert got["live"] is True and got["ready"] is True
    assert got["multi_ready"] is True and got["plus_1_ready"] is True
    assert got["async"]["live"] is True and got["async"]["multi_ready"] is True

    server_metadata = ok_json(client.get("/v2"))
    assert got["server_metadata"] == server_metadata
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
        got["server_metadata"]["extensions"]
    )
    for name, path in [("multi_metadata", "multi"), ("plus_1_metadata", "plus/versions/1")]:
        rest = ok_json(client.get(f"/v2/models/{path}"))
        assert got[name] == as_protobuf_json(service_pb2.ModelMetadataResponse(), rest), name
    rest_config = {"config": ok_json(client.get("/v2/models/multi/config"))}
    assert got["multi_config"] == as_protobuf_json(service_pb2.ModelConfigResponse(), rest_config)

    multi = v2_tensors(client, "/v2/models/multi/infer", MULTI_INPUTS)
    assert multi["sum"]["data"] == [2, 3, 4, 6, 7, 8]  # features + shift per row
    assert got["multi"] == multi
    assert got["async"]["multi"] == multi
    assert got["multi_sum_only"] == {"sum": multi["sum"]}

    sent = [b"abc", "h\u00e9".encode(), b"\xff\x00z"]
    texts = [value.decode("latin-1") for value in sent]  # as the script prints bytes
    assert got["text"]["echo_bytes"] == {"datatype": "BYTES", "shape": [3], "data": texts}
    assert got["text"]["upper"]["data"] == [value.upper().decode("latin-1") for value in sent]
    assert got["text"]["length"]["data"] == [3, 3, 3]
    utf8 = [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["abc", "h\u00e9"]}]
    text = v2_tensors(client, "/v2/models/text/infer", utf8)
    for name in ("echo_bytes", "upper", "length"):  # the first two, as JSON answers them
        assert got["text"][name]["datatype"] == text[name]["datatype"]
        assert got["text"][name]["data"][:2] == text[name]["data"], name

    x = [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]
    for version in ("1", "2"):
        path = f"/v2/models/plus/versions/{version}/infer"
        expected = {"model_version": version, "outputs": v2_tensors(client, path, x)}
        assert got["plus"][version] == expected, version
    assert got["plus"]["1"]["outputs"] != got["plus"]["2"]["outputs"]

    unknown = error_message(client.post("/v2/models/nope/infer", json={"inputs": x}), 404)
    assert got["unknown_model"] == {"status": "StatusCode.NOT_FOUND", "message": unknown}
    assert got["async"]["unknown_model"] == got["unknown_model"]
    wrong = [{**MULTI_INPUTS[0], "datatype": "INT32"}, MULTI_INPUTS[1]]
    refused = error_message(client.post("/v2/models/multi/infer", json={"inputs": wrong}), 400)
    assert got["wrong_datatype"] == {"status": "StatusCode.INVALID_ARGUMENT", "message": refused}

    # the script's three inferences on multi (two sync, one asyncio), two rows each; the refused
    # one never reached the model
    before, after = got["stats_before"], got["stats_after"]
    assert (after["name"], after["version"]) == ("multi", "1")

    def grown(*path: str) -> int:
        return count(after, *path) - count(before, *path)

    assert grown("inference_stats", "success", "count") == 3
    assert grown("inference_count") == 6
    assert 1 <= grown("execution_count") <= 3  # batched or not
    assert grown("inference_stats", "success", "ns") > 0
    assert count(after, "last_inference") >= max(count(before, "last_inference"), 1)
    (rest_after,) = rest_stats["model_stats"]
    assert after == as_protobuf_json(service_pb2.ModelStatistics(), rest_after)
