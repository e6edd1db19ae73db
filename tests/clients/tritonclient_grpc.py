"""Triton's own gRPC client (`tritonclient.grpc`, sync and asyncio) against a gateway's gRPC port,
with its defaults (inputs set from numpy go as raw contents and outputs come back raw).

Usage: python -m tests.clients.tritonclient_grpc HOST:PORT; prints what the client got as one JSON
line for the test to compare: every output as {"datatype", "shape", "data"} with `data` flat and
BYTES elements as latin-1 text (so any byte survives); metadata, model config and statistics in
the client's as_json form (protobuf JSON: 64-bit integers as strings, defaults left out).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

TEXT = [b"abc", "h\u00e9".encode(), b"\xff\x00z"]  # not all UTF-8: raw contents carry any byte


def multi_inputs(features_type: str = "FP32") -> list[grpcclient.InferInput]:
    """`features` [2, 3] and `shift` [2]; `features_type` INT32 makes a wrong datatype."""
    features = grpcclient.InferInput("features", [2, 3], features_type)
    numpy_type = np.float32 if features_type == "FP32" else np.int32
    features.set_data_from_numpy(np.arange(1, 7, dtype=numpy_type).reshape(2, 3))
    shift = grpcclient.InferInput("shift", [2], "INT32")
    shift.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
    return [features, shift]


def text_inputs() -> list[grpcclient.InferInput]:
    text = grpcclient.InferInput("text", [len(TEXT)], "BYTES")
    text.set_data_from_numpy(np.array(TEXT, dtype=object))
    return [text]


def plus_inputs() -> list[grpcclient.InferInput]:
    x = grpcclient.InferInput("x", [2], "FP32")
    x.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    return [x]


def tensors(result: Any) -> dict[str, Any]:
    """Every output of an InferResult, in the order of the answer."""
    out = {}
    for output in result.get_response().outputs:
        array = result.as_numpy(output.name)
        if output.datatype == "BYTES":
            data = [bytes(v).decode("latin-1") for v in array.reshape(-1)]
        else:
            data = array.reshape(-1).tolist()
        out[output.name] = {"datatype": output.datatype, "shape": list(array.shape), "data": data}
    return out


def status_of(call: Any) -> dict[str, str]:
    """The status a failing call raised, as the client reports it."""
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}
    raise AssertionError("the call did not fail")


def multi_statistics(client: grpcclient.InferenceServerClient) -> dict[str, Any]:
    (stats,) = client.get_inference_statistics("multi", as_json=True)["model_stats"]
    return dict(stats)


def sync_calls(url: str) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(url)
    got: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "multi_ready": client.is_model_ready("multi"),
        "plus_1_ready": client.is_model_ready("plus", "1"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "multi_metadata": client.get_model_metadata("multi", as_json=True),
        "plus_1_metadata": client.get_model_metadata("plus", "1", as_json=True),
        "multi_config": client.get_model_config("multi", as_json=True),
        "stats_before": multi_statistics(client),
    }
    got["multi"] = tensors(client.infer("multi", multi_inputs()))
    subset = [grpcclient.InferRequestedOutput("sum")]
    got["multi_sum_only"] = tensors(client.infer("multi", multi_inputs(), outputs=subset))
    got["text"] = tensors(client.infer("text", text_inputs()))
    got["plus"] = {}
    for version in ("1", "2"):
        result = client.infer("plus", plus_inputs(), model_version=version)
        got["plus"][version] = {
            "model_version": result.get_response().model_version,
            "outputs": tensors(result),
        }
    got["unknown_model"] = status_of(lambda: client.infer("nope", plus_inputs()))
    got["wrong_datatype"] = status_of(lambda: client.infer("multi", multi_inputs("INT32")))
    client.close()
    return got


async def async_calls(url: str) -> dict[str, Any]:
    client = grpcclient_aio.InferenceServerClient(url)
    try:  # the asyncio client takes the same InferInput
        got: dict[str, Any] = {
            "live": await client.is_server_live(),
            "multi_ready": await client.is_model_ready("multi"),
            "multi": tensors(await client.infer("multi", multi_inputs())),
        }
        try:
            await client.infer("nope", plus_inputs())
        except InferenceServerException as exc:
            got["unknown_model"] = {"status": str(exc.status()), "message": str(exc.message())}
        return got
    finally:
        await client.close()


def main() -> None:
    url = sys.argv[1]
    got = sync_calls(url)
    got["async"] = asyncio.run(async_calls(url))
    client = grpcclient.InferenceServerClient(url)
    got["stats_after"] = multi_statistics(client)  # after the sync and the asyncio inferences
    client.close()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
