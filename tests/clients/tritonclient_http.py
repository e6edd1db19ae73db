"""Triton's own HTTP client (`tritonclient.http`, sync and asyncio) against a gateway, with its
defaults: inputs set from numpy go as binary tensors and outputs come back binary.

Usage: python -m tests.clients.tritonclient_http HOST:PORT; prints what the client got as JSON
(every output as a list, BYTES as latin-1 text so any byte survives) for the test to compare.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
import tritonclient.http as http
import tritonclient.http.aio as http_aio


def multi_inputs(binary: bool) -> list[http.InferInput]:
    features = http.InferInput("features", [2, 3], "FP32")
    features.set_data_from_numpy(np.arange(1, 7, dtype=np.float32).reshape(2, 3), binary)
    shift = http.InferInput("shift", [2], "INT32")
    shift.set_data_from_numpy(np.array([1, 2], dtype=np.int32), binary)
    return [features, shift]


def text_inputs() -> list[http.InferInput]:
    text = http.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([b"abc", "h\u00e9".encode(), b"\xff\x00z"], dtype=object))
    return [text]


def as_lists(result: Any, names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        array = result.as_numpy(name)
        if array.dtype == object:
            out[name] = [bytes(v).decode("latin-1") for v in array.reshape(-1)]
        else:
            out[name] = array.reshape(-1).tolist()
    return out


def sync_calls(url: str) -> dict[str, Any]:
    client = http.InferenceServerClient(url)
    metadata = client.get_model_metadata("multi")
    outputs = [o["name"] for o in metadata["outputs"]]
    got: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_model_ready("multi"),
        "extensions": client.get_server_metadata()["extensions"],
        "multi_config": client.get_model_config("multi"),
        "multi_outputs": outputs,
    }
    got["multi_binary"] = as_lists(client.infer("multi", multi_inputs(True)), outputs)
    json_only = [http.InferRequestedOutput(name, binary_data=False) for name in outputs]
    result = client.infer("multi", multi_inputs(False), outputs=json_only)
    got["multi_json"] = as_lists(result, outputs)
    text_outputs = [o["name"] for o in client.get_model_metadata("text")["outputs"]]
    got["text_outputs"] = text_outputs
    got["text"] = as_lists(client.infer("text", text_inputs()), text_outputs)
    client.close()
    return got


async def async_calls(url: str, outputs: list[str]) -> dict[str, Any]:
    client = http_aio.InferenceServerClient(url)
    try:  # the asyncio client takes the same InferInput
        return as_lists(await client.infer("multi", multi_inputs(True)), outputs)
    finally:
        await client.close()


def main() -> None:
    url = sys.argv[1]
    got = sync_calls(url)
    got["multi_async"] = asyncio.run(async_calls(url, got["multi_outputs"]))
    print(json.dumps(got))


if __name__ == "__main__":
    main()
