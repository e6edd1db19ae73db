"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`) on a real server's gRPC
port: answers equal V2 REST's for typed and raw contents and every datatype, every malformed
request is INVALID_ARGUMENT with its reason, and Triton's statistics count what ran."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.core.dtypes import BY_V2_NAME
from service.core.signatures import Signature, TensorInfo
from service.errors import InvalidInputError
from service.grpc import v2_codec
from service.v2 import raw_tensors
from tests.saved_models import DTYPES
from tests.server import grpc_target, ok_json

pytest_plugins = ["tests.gateway_fixtures"]

Code = grpc.StatusCode
MULTI_FEATURES = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
MULTI_SHIFT = np.array([1, 2], dtype=np.int32)


@pytest.fixture(scope="module")
def stub(protocol_server: str) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_target(protocol_server)) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def typed_input(name: str, array: np.ndarray, datatype: str, field: str) -> Any:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=array.shape
    )
    getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    return tensor


def multi_request(raw: bool) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="multi", id="call-1")
    if raw:
        for name, array, datatype in (
            ("features", MULTI_FEATURES, "FP32"),
            ("shift", MULTI_SHIFT, "INT32"),
        ):
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(raw_tensors.encode(array))
    else:
        request.inputs.extend(
            [
                typed_input("features", MULTI_FEATURES, "FP32", "fp32_contents"),
                typed_input("shift", MULTI_SHIFT, "INT32", "int_contents"),
            ]
        )
    return request


def rest_outputs(client: httpx.Client, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    body = ok_json(client.post(f"/v2/models/{model}/infer", json={"inputs": inputs}))
    return {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in body["outputs"]}


def grpc_outputs(response: service_pb2.ModelInferResponse) -> dict[str, Any]:
    """Each output as (datatype, shape, flat values), from typed or raw contents."""
    got = {}
    for index, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            dtype = BY_V2_NAME[tensor.datatype]
            data = raw_tensors.decode(
                response.raw_output_contents[index], dtype, list(tensor.shape), tensor.name
            )
            values = data.reshape(-1).tolist()
        else:
            (field,) = [f for f, _ in tensor.contents.ListFields()] or [None]
            values = list(getattr(tensor.contents, field.name)) if field else []
        got[tensor.name] = (tensor.datatype, list(tensor.shape), values)
    return got


def refusal(call: Any) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    return error.code(), error.details() or ""


MULTI_REST = [
    {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
    {"name": "shift", "datatype": "INT32", "shape": [2], "data": [1, 2]},
]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_model_infer_answers_as_rest_in_the_form_it_was_asked(
    stub: Any, client: httpx.Client, raw: bool
) -> None:
    response = stub.ModelInfer(multi_request(raw), timeout=30)
    assert (response.model_name, response.model_version, response.id) == ("multi", "1", "call-1")
    assert bool(response.raw_output_contents) is raw
    assert grpc_outputs(response) == rest_outputs(client, "multi", MULTI_REST)


def test_every_datatype_round_trips_raw(stub: Any) -> None:
    """The dtypes model answers each input as it is (its inputs, all twelve datatypes, must go in
    one request, so raw: FP16 has no typed field)."""
    request = service_pb2.ModelInferRequest(model_name="dtypes")
    sent = {}
    for label, _, _, datatype in DTYPES:
        values = [0, 1, 1, 0] if datatype == "BOOL" else [0, 1, 2, 3]
        sent[label] = np.array(values).astype(BY_V2_NAME[datatype].numpy)
        request.inputs.add(name=f"x_{label}", datatype=datatype, shape=[4])
        request.raw_input_contents.append(raw_tensors.encode(sent[label]))
    got = grpc_outputs(stub.ModelInfer(request, timeout=30))
    for label, _, _, datatype in DTYPES:
        assert got[f"y_{label}"] == (datatype, [4], sent[label].tolist()), label


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("BOOL", "bool_contents", [True, False]),
        ("INT8", "int_contents", [-128, 127]),
        ("INT16", "int_contents", [-5, 300]),
        ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
        ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
        ("UINT8", "uint_contents", [0, 255]),
        ("UINT16", "uint_contents", [0, 65535]),
        ("UINT32", "uint_contents", [0, 2**32 - 1]),
        ("UINT64", "uint64_contents", [0, 2**64 - 1]),
        ("FP32", "fp32_contents", [0.5, -1.25]),
        ("FP64", "fp64_contents", [0.1, 1e300]),
        ("BYTES", "bytes_contents", [b"a", b"\xff\x00"]),
    ],
)
def test_typed_contents_decode_to_the_models_dtype(
    datatype: str, field: str, values: list[Any]
) -> None:
    dtype = BY_V2_NAME[datatype]
    signature = one_input_signature(dtype)
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2])
    getattr(tensor.contents, field).extend(values)
    (array,) = v2_codec.decode_inputs(request, signature, raw=False).values()
    assert array.dtype == dtype.numpy and array.tolist() == values


def one_input_signature(dtype: Any) -> Signature:
    tensor = TensorInfo("x", dtype, (None,))
    return Signature("serving_default", "predict", {"x": tensor}, {"y": tensor}, SignatureDef())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.inputs[0].__setattr__("datatype", "FP64"), "does not match the model's FP32"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(7.0), "holds 6 elements"),
        (lambda r: r.inputs[0].contents.fp64_contents.append(7.0), "not fp64_contents"),
        (lambda r: r.raw_input_contents.append(b"1234"), "raw_input_contents has 1 entries"),
        (lambda r: r.inputs[1].__setattr__("name", "features"), "more than once"),
        (lambda r: r.inputs[1].__setattr__("name", "nope"), "nope"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), "negative dimension"),
        (lambda r: r.inputs[0].__setattr__("datatype", "FP8"), "FP8"),
        (lambda r: r.parameters["colour"].__setattr__("string_param", "red"), "colour"),
        (lambda r: r.parameters["signature_name"].__setattr__("int64_param", 3), "string_param"),
        (lambda r: r.parameters["signature_name"].__setattr__("string_param", "nah"), "nah"),
        (lambda r: r.outputs.add(name="nope"), "nope"),
        (lambda r: r.__setattr__("model_version", "v1"), "positive integer"),
    ],
)
def test_malformed_requests_are_invalid_argument_with_the_reason(
    stub: Any, change: Any, reason: str
) -> None:
    request = multi_request(raw=False)
    change(request)
    code, details = refusal(lambda: stub.ModelInfer(request, timeout=30))
    assert code == Code.INVALID_ARGUMENT, (code, details)
    assert reason in details, details


def test_the_hints_triton_tools_send_are_accepted(stub: Any) -> None:
    """perf_analyzer asks every request for a final empty response (for streaming models)."""
    request = multi_request(raw=True)
    for name in ("triton_enable_empty_final_response", "sequence_start"):
        request.parameters[name].bool_param = True
    request.parameters["priority"].int64_param = 1
    assert len(stub.ModelInfer(request, timeout=30).outputs) == 2


def test_raw_and_typed_contents_do_not_mix(stub: Any) -> None:
    request = multi_request(raw=True)
    request.inputs[0].contents.fp32_contents.extend(MULTI_FEATURES.reshape(-1).tolist())
    code, details = refusal(lambda: stub.ModelInfer(request, timeout=30))
    assert code == Code.INVALID_ARGUMENT and "raw_input_contents" in details


def test_a_narrow_integer_out_of_range_is_refused() -> None:
    signature = one_input_signature(BY_V2_NAME["INT8"])
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(InvalidInputError, match="out of range for INT8"):
        v2_codec.decode_inputs(request, signature, raw=False)


def test_unknown_models_and_versions_are_not_found(stub: Any) -> None:
    for name, version in (("nope", ""), ("plus", "9")):
        request = multi_request(raw=False)
        request.model_name, request.model_version = name, version
        code, _ = refusal(lambda r=request: stub.ModelInfer(r, timeout=30))
        assert code == Code.NOT_FOUND
        ready = service_pb2.ModelReadyRequest(name=name, version=version)
        assert refusal(lambda r=ready: stub.ModelReady(r, timeout=30))[0] == Code.NOT_FOUND


def test_versions_outputs_and_signatures_are_addressed(stub: Any, client: httpx.Client) -> None:
    for version in ("1", "2"):
        request = service_pb2.ModelInferRequest(model_name="plus", model_version=version)
        request.inputs.append(
            typed_input("x", np.array([1.0, 2.0], np.float32), "FP32", "fp32_contents")
        )
        rest = ok_json(
            client.post(
                f"/v2/models/plus/versions/{version}/infer",
                json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]},
            )
        )
        answer = stub.ModelInfer(request, timeout=30)
        assert answer.model_version == version
        assert list(answer.outputs[0].contents.fp32_contents) == rest["outputs"][0]["data"]
    request = multi_request(raw=False)
    request.outputs.add(name="count")
    assert [o.name for o in stub.ModelInfer(request, timeout=30).outputs] == ["count"]
    request = multi_request(raw=False)
    del request.inputs[1]
    request.parameters["signature_name"].string_param = "scale"
    (scaled,) = stub.ModelInfer(request, timeout=30).outputs
    assert scaled.name == "scaled"
    assert list(scaled.contents.fp32_contents) == (2 * MULTI_FEATURES).reshape(-1).tolist()


def test_metadata_config_and_readiness_match_rest(stub: Any, client: httpx.Client) -> None:
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="multi"), timeout=10).ready
    server = stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=10)
    got, rest = as_rest(server, ok_json(client.get("/v2")))
    assert got == rest and "statistics" in server.extensions
    for path, method, request in (
        ("/v2/models/plus", stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="plus")),
        (
            "/v2/models/plus/versions/1",
            stub.ModelMetadata,
            service_pb2.ModelMetadataRequest(name="plus", version="1"),
        ),
    ):
        got, rest = as_rest(method(request, timeout=10), ok_json(client.get(path)))
        assert got == rest
    config = stub.ModelConfig(service_pb2.ModelConfigRequest(name="multi"), timeout=10)
    rest_config = ok_json(client.get("/v2/models/multi/config"))
    got, rest = as_rest(config.config, rest_config)
    assert got == rest and rest["maxBatchSize"] == rest_config["max_batch_size"]
    index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=10)
    listed = {(m.name, m.version, m.state) for m in index.models}
    assert {("plus", "1", "READY"), ("plus", "2", "READY"), ("multi", "1", "READY")} <= listed


def as_rest(message: Any, rest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gRPC answer and REST's JSON, both read into the gRPC message and written as JSON
    again (protobuf's JSON writes 64-bit integers as strings)."""
    again = json_format.ParseDict(rest, type(message)())
    return json_format.MessageToDict(message), json_format.MessageToDict(again)


def test_methods_it_lacks_say_so(stub: Any) -> None:
    code, details = refusal(
        lambda: stub.RepositoryModelLoad(
            service_pb2.RepositoryModelLoadRequest(model_name="plus"), timeout=10
        )
    )
    assert code == Code.UNIMPLEMENTED and "/admin/models/{model}/load" in details


def test_statistics_count_what_ran_alike_in_rest_and_grpc(stub: Any, client: httpx.Client) -> None:
    def stats() -> dict[str, Any]:
        return ok_json(client.get("/v2/models/text/versions/1/stats"))["model_stats"][0]

    before = stats()
    for rows in (1, 2, 3):
        request = service_pb2.ModelInferRequest(model_name="text")
        request.inputs.add(
            name="text", datatype="BYTES", shape=[rows]
        ).contents.bytes_contents.extend([b"ab"] * rows)
        stub.ModelInfer(request, timeout=30)
    bad = service_pb2.ModelInferRequest(model_name="text")
    bad.inputs.add(name="text", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    refusal(lambda: stub.ModelInfer(bad, timeout=30))  # refused before the model: not counted
    after = stats()
    assert after["inference_count"] - before["inference_count"] == 6
    success = after["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 3
    for stage in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][stage]["ns"] > before["inference_stats"][stage]["ns"]
    assert (
        after["inference_stats"]["success"]["ns"] >= after["inference_stats"]["compute_infer"]["ns"]
    )
    assert after["last_inference"] / 1000 == pytest.approx(time.time(), abs=60)
    stages = ("compute_input", "compute_infer", "compute_output")
    for stage in stages:  # perf_analyzer needs the three stages with the same count
        assert after["inference_stats"][stage]["count"] == success["count"], stage
    for batch in after["batch_stats"]:
        assert len({batch[stage]["count"] for stage in stages}) == 1, batch
    executions = sum(b["compute_infer"]["count"] for b in after["batch_stats"])
    assert executions == after["execution_count"] > before["execution_count"]
    over_grpc = stub.ModelStatistics(
        service_pb2.ModelStatisticsRequest(name="text", version="1"), timeout=10
    )
    assert over_grpc.model_stats[0].inference_count == after["inference_count"]
    every = ok_json(client.get("/v2/models/stats"))["model_stats"]
    assert {(s["name"], s["version"]) for s in every} >= {
        ("text", "1"),
        ("plus", "1"),
        ("plus", "2"),
    }
    assert client.get("/v2/models/nope/stats").status_code == 404
