"""KServe's own Python SDK clients against a gateway: `kserve.InferenceRESTClient` (V2, and V1 for
inference on TF Serving's /v1/models/{m}:predict) and `kserve.InferenceGRPCClient`, with the SDK's
request types (InferRequest, InferInput.set_data_from_numpy, RequestedOutput).

Run by the KServe venv's python (.venv-kserve, scripts/kserve-venv.sh), never in the test process:
the SDK registers the same `inference.*` protobuf names as tritonclient, which the gateway
imports. modelserve is not installed there, so this script imports neither `service` nor `tests`.

Usage: .venv-kserve/bin/python tests/clients/kserve_clients.py http://HOST:PORT GRPC_HOST:PORT
Prints what the clients got as one JSON line for the test to compare with plain V2 JSON requests:
every output as {"datatype", "shape", "data"} with `data` flat and BYTES elements as latin-1 text
of their bytes (so any byte survives).

kserve 0.21's clients are asyncio only, and offer liveness, readiness and inference but no
metadata calls: server and model metadata are read with the SDK's generated gRPC stub (KServe's
own grpc_predict_v2.proto) and, over REST, checked against the SDK's V2 data models.

SDK limits worked around here (kserve 0.21):
- InferenceRESTClient turns binary outputs into JSON-style data as it reads them
  (InferResponse.from_bytes calls InferOutput.set_data_from_numpy(binary_data=False)), which
  decodes BYTES elements as UTF-8 and raises InferenceError for any other bytes; so REST carries
  UTF-8 text only, and bytes that are not UTF-8 go over gRPC (raw contents), which keeps them.
- InferenceRESTClient sends no model version (InferRequest.to_rest leaves `model_version` out and
  the URL is always {protocol}/models/{name}/infer): versions are asked for over gRPC only.
- The V1 protocol of the SDK is KServe's own dialect besides :predict: is_server_live reads
  {"status": "alive"} at the server's root and is_model_ready a `ready` key in GET /v1/models/{m},
  neither of which is TF Serving's REST API (its model status is `model_version_status`); so V1
  is used for inference only.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferResponse, RequestedOutput
from kserve.protocol.rest import v2_datamodels

UTF8_TEXT = [b"abc", "h\u00e9".encode()]
ANY_BYTES = [*UTF8_TEXT, b"\xff\x00z"]  # not UTF-8: gRPC only (see the module's docstring)
V1_MULTI = {"instances": [{"features": [1, 2, 3], "shift": 1}, {"features": [4, 5, 6], "shift": 2}]}
V1_PLUS = {"instances": [1.0, 2.0, 5.0]}
V1_TEXT = {"instances": ["abc", "h\u00e9"]}
# the `dtypes` model's identities: extremes of each V2 datatype (floats with a short exact form, so
# the JSON answer's shortest float32 text and the SDK's float64 of the same value agree)
DTYPES = {
    "BOOL": ("bool", np.bool_, [True, False]),
    "UINT8": ("uint8", np.uint8, [0, 2**8 - 1]),
    "UINT16": ("uint16", np.uint16, [0, 2**16 - 1]),
    "UINT32": ("uint32", np.uint32, [0, 2**32 - 1]),
    "UINT64": ("uint64", np.uint64, [0, 2**64 - 1]),
    "INT8": ("int8", np.int8, [-(2**7), 2**7 - 1]),
    "INT16": ("int16", np.int16, [-(2**15), 2**15 - 1]),
    "INT32": ("int32", np.int32, [-(2**31), 2**31 - 1]),
    "INT64": ("int64", np.int64, [-(2**63), 2**63 - 1]),
    "FP16": ("float16", np.float16, [0.5, -65504.0]),
    "FP32": ("float32", np.float32, [0.5, -16777216.0]),
    "FP64": ("float64", np.float64, [0.1, -1.0e300]),
}


def multi_inputs(binary: bool = True, features_type: str = "FP32") -> list[InferInput]:
    """`features` [2, 3] and `shift` [2]; `features_type` INT32 makes a wrong datatype."""
    features = InferInput("features", [2, 3], features_type)
    numpy_type = np.float32 if features_type == "FP32" else np.int32
    features.set_data_from_numpy(np.arange(1, 7, dtype=numpy_type).reshape(2, 3), binary)
    shift = InferInput("shift", [2], "INT32")
    shift.set_data_from_numpy(np.array([1, 2], dtype=np.int32), binary)
    return [features, shift]


def text_inputs(values: list[bytes], binary: bool = True) -> list[InferInput]:
    text = InferInput("text", [len(values)], "BYTES")
    text.set_data_from_numpy(np.array(values, dtype=object), binary)
    return [text]


def plus_inputs() -> list[InferInput]:
    x = InferInput("x", [2], "FP32")
    x.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    return [x]


def dtypes_inputs() -> list[InferInput]:
    """Every datatype at once, binary (REST) or raw (gRPC): the SDK sends FP16 no other way."""
    inputs = []
    for datatype, (label, numpy_type, values) in DTYPES.items():
        tensor = InferInput(f"x_{label}", [len(values)], datatype)
        tensor.set_data_from_numpy(np.array(values, dtype=numpy_type))
        inputs.append(tensor)
    return inputs


def dtypes_sent() -> list[dict[str, Any]]:
    """The inputs of dtypes_inputs as V2 JSON tensors, for the test to send them itself."""
    return [
        {"name": f"x_{label}", "datatype": datatype, "shape": [len(values)], "data": values}
        for datatype, (label, _, values) in DTYPES.items()
    ]


def tensors(response: InferResponse) -> dict[str, Any]:
    """Every output of an answer as the SDK reads it (`as_numpy`), in the answer's order."""
    out = {}
    for output in response.outputs:
        array = output.as_numpy()
        if output.datatype == "BYTES":  # bytes over gRPC, str from REST JSON
            data = [
                (v.encode() if isinstance(v, str) else bytes(v)).decode("latin-1")
                for v in array.reshape(-1)
            ]
        else:
            data = array.reshape(-1).tolist()
        out[output.name] = {"datatype": output.datatype, "shape": list(array.shape), "data": data}
    return out


async def rest_error(call: Awaitable[Any]) -> dict[str, Any]:
    try:
        await call
    except httpx.HTTPStatusError as exc:  # the SDK puts the server's `error` in the message
        return {"status": exc.response.status_code, "message": str(exc)}
    raise AssertionError("the call did not fail")


async def grpc_error(call: Awaitable[Any]) -> dict[str, Any]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return {"status": exc.code().name, "message": exc.details()}
    raise AssertionError("the call did not fail")


async def rest_v2(url: str) -> dict[str, Any]:
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        got: dict[str, Any] = {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "multi_ready": await client.is_model_ready(url, "multi"),
            "unknown_ready": await client.is_model_ready(url, "nope"),
        }

        async def infer(request: InferRequest, headers: dict[str, str]) -> dict[str, Any]:
            # response_headers: the SDK's way to see whether the answer came binary
            answer = await client.infer(url, request, request.model_name, response_headers=headers)
            return tensors(answer)

        binary_answer: dict[str, str] = {}
        json_answer: dict[str, str] = {}
        got["multi_json"] = await infer(InferRequest("multi", multi_inputs(False)), json_answer)
        every_output_binary = {"binary_data_output": True}
        request = InferRequest("multi", multi_inputs(True), parameters=every_output_binary)
        got["multi_binary"] = await infer(request, binary_answer)
        got["binary_answer_header"] = binary_answer.get("inference-header-content-length")
        got["json_answer_header"] = json_answer.get("inference-header-content-length")
        # binary inputs (the SDK's default), JSON outputs
        got["multi_binary_in"] = await infer(InferRequest("multi", multi_inputs()), {})
        got["text_json"] = await infer(InferRequest("text", text_inputs(UTF8_TEXT, False)), {})
        request = InferRequest("text", text_inputs(UTF8_TEXT), parameters=every_output_binary)
        got["text_binary"] = await infer(request, {})
        wanted = [RequestedOutput("upper", {"binary_data": True}), RequestedOutput("length")]
        request = InferRequest("text", text_inputs(UTF8_TEXT, False), request_outputs=wanted)
        subset_answer: dict[str, str] = {}
        got["text_subset"] = await infer(request, subset_answer)
        got["subset_answer_header"] = subset_answer.get("inference-header-content-length")
        request = InferRequest("dtypes", dtypes_inputs(), parameters=every_output_binary)
        got["dtypes_binary"] = await infer(request, {})
        request = InferRequest("plus", plus_inputs(), request_id="kserve-rest-1")
        got["plus_id"] = (await client.infer(url, request, "plus")).id
        unknown = InferRequest("nope", plus_inputs())
        got["unknown_model"] = await rest_error(client.infer(url, unknown, "nope"))
        wrong = InferRequest("multi", multi_inputs(features_type="INT32"))
        got["wrong_datatype"] = await rest_error(client.infer(url, wrong, "multi"))

    # no metadata call in the REST client: plain GETs, read with the SDK's V2 data models (strict:
    # no coercion, so `shape: ["3"]` or a numeric version would fail; unknown keys are dropped,
    # so the test's comparison with the whole answer catches those)
    async with httpx.AsyncClient(base_url=url) as plain:
        server = (await plain.get("/v2")).json()
        model = (await plain.get("/v2/models/multi")).json()
    schemas = v2_datamodels.ServerMetadataResponse, v2_datamodels.ModelMetadataResponse
    got["server_metadata"] = schemas[0].model_validate(server, strict=True).model_dump()
    got["multi_metadata"] = schemas[1].model_validate(model, strict=True).model_dump()
    return got


async def rest_v1(url: str) -> dict[str, Any]:
    """KServe's V1 protocol is TF Serving's :predict; the SDK sends a dict and returns one."""
    async with InferenceRESTClient(RESTConfig(protocol="v1")) as client:
        return {
            "sent": {"plus": V1_PLUS, "multi": V1_MULTI, "text": V1_TEXT},
            "plus": await client.infer(url, V1_PLUS, "plus"),
            "multi": await client.infer(url, V1_MULTI, "multi"),
            "text": await client.infer(url, V1_TEXT, "text"),
            "unknown_model": await rest_error(client.infer(url, V1_PLUS, "nope")),
        }


def metadata_of(response: Any) -> dict[str, Any]:
    """A ModelMetadataResponse as V2 REST's JSON (shape dimensions as numbers)."""

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}

    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": [tensor(t) for t in response.inputs],
        "outputs": [tensor(t) for t in response.outputs],
    }


async def grpc_v2(target: str) -> dict[str, Any]:
    async with InferenceGRPCClient(target) as client:
        got: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "multi_ready": await client.is_model_ready("multi"),
            "unknown_ready": await grpc_error(client.is_model_ready("nope")),
            # raw contents: the SDK's default
            "multi_raw": tensors(await client.infer(InferRequest("multi", multi_inputs()))),
            "multi_typed": tensors(await client.infer(InferRequest("multi", multi_inputs(False)))),
            "text_raw": tensors(await client.infer(InferRequest("text", text_inputs(ANY_BYTES)))),
        }
        request = InferRequest("text", text_inputs(UTF8_TEXT, False))
        got["text_typed"] = tensors(await client.infer(request))
        request = InferRequest("multi", multi_inputs(), request_outputs=[RequestedOutput("sum")])
        got["multi_sum_only"] = tensors(await client.infer(request))
        got["dtypes_raw"] = tensors(await client.infer(InferRequest("dtypes", dtypes_inputs())))
        request = InferRequest("plus", plus_inputs(), request_id="kserve-grpc-1")
        got["plus_id"] = (await client.infer(request)).id
        got["plus"] = {}
        for version in ("1", "2"):
            answer = await client.infer(InferRequest("plus", plus_inputs(), model_version=version))
            got["plus"][version] = {
                "model_version": answer.model_version,
                "outputs": tensors(answer),
            }
        got["unknown_model"] = await grpc_error(client.infer(InferRequest("nope", plus_inputs())))
        wrong = InferRequest("multi", multi_inputs(features_type="INT32"))
        got["wrong_datatype"] = await grpc_error(client.infer(wrong))

    async with grpc.aio.insecure_channel(target) as channel:  # the SDK's own stub
        stub = GRPCInferenceServiceStub(channel)
        server = await stub.ServerMetadata(pb.ServerMetadataRequest())
        got["server_metadata"] = {
            "name": server.name,
            "version": server.version,
            "extensions": list(server.extensions),
        }
        got["multi_metadata"] = metadata_of(
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="multi"))
        )
        got["plus_1_metadata"] = metadata_of(
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="plus", version="1"))
        )
    return got


async def concurrent(url: str, target: str) -> list[dict[str, Any]]:
    """REST and gRPC inferences at once, on clients shared between the calls."""
    async with (
        InferenceRESTClient(RESTConfig(protocol="v2")) as rest,
        InferenceGRPCClient(target) as grpc_client,
    ):
        calls: list[Awaitable[InferResponse]] = []
        for _ in range(4):
            calls.append(rest.infer(url, InferRequest("multi", multi_inputs()), "multi"))
            calls.append(grpc_client.infer(InferRequest("multi", multi_inputs())))
        return [tensors(answer) for answer in await asyncio.gather(*calls)]


async def run(url: str, target: str) -> dict[str, Any]:
    return {
        "dtypes_sent": dtypes_sent(),
        "rest": await rest_v2(url),
        "v1": await rest_v1(url),
        "grpc": await grpc_v2(target),
        "concurrent": await concurrent(url, target),
    }


def main() -> None:
    url, target = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(run(url, target))))


if __name__ == "__main__":
    main()
