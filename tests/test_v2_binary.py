"""The V2 binary tensor data extension over HTTP, against a real server: binary inputs of every
datatype, outputs answered as binary (all, or the ones asked for), BYTES framing, the body's
`model_name`, and a clear 400 for every inconsistency. Bodies are framed here by hand from the
extension's definition; Triton's own client is tested in test_v2_clients.py."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.dtypes import BY_V2_NAME
from tests.saved_models import DTYPE_VALUES, DTYPES, FEATURES, SHIFT, X, affine
from tests.server import assert_same, error_message, mentions, ok_json

pytest_plugins = ["tests.gateway_fixtures"]

HEADER = "Inference-Header-Content-Length"


def raw(datatype: str, values: list[Any]) -> bytes:
    """`values` as the extension's bytes: little-endian, BOOL one byte, BYTES length-prefixed."""
    if datatype == "BYTES":
        items = [v.encode() if isinstance(v, str) else v for v in values]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    if datatype == "BOOL":
        return bytes(int(v) for v in values)
    return np.asarray(values, dtype=BY_V2_NAME[datatype].numpy.newbyteorder("<")).tobytes()


def binary_tensor(name: str, datatype: str, shape: list[int], data: bytes) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": len(data)},
    }


def post_binary(
    client: httpx.Client, path: str, document: dict[str, Any], data: bytes
) -> httpx.Response:
    header = json.dumps(document).encode()
    return client.post(path, content=header + data, headers={HEADER: str(len(header))})


def answer_parts(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """(the JSON header, the binary data after it) of a binary answer."""
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    assert response.headers["content-length"] == str(len(response.content))
    return json.loads(response.content[:length]), response.content[length:]


def binary_outputs(document: dict[str, Any], data: bytes) -> dict[str, bytes]:
    """Each binary output's bytes, cut in output order by its binary_data_size."""
    pieces, offset = {}, 0
    for output in document["outputs"]:
        if "parameters" in output:
            assert "data" not in output, output
            size = output["parameters"]["binary_data_size"]
            pieces[output["name"]] = data[offset : offset + size]
            offset += size
    assert offset == len(data), "the answer's binary data and its sizes differ"
    return pieces


def multi_document(**extra: Any) -> tuple[dict[str, Any], bytes]:
    features = raw("FP32", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    shift = raw("INT32", [1, 2])
    inputs = [
        binary_tensor(FEATURES, "FP32", [2, 3], features),
        binary_tensor(SHIFT, "INT32", [2], shift),
    ]
    return {"inputs": inputs, **extra}, features + shift


def json_answer(client: httpx.Client) -> dict[str, Any]:
    """The multi model's answer to the same inputs sent as JSON."""
    inputs = [
        {"name": FEATURES, "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
        {"name": SHIFT, "datatype": "INT32", "shape": [2], "data": [1, 2]},
    ]
    return ok_json(client.post("/v2/models/multi/infer", json={"inputs": inputs}))


def test_the_server_metadata_lists_the_extension(client: httpx.Client) -> None:
    assert "binary_tensor_data" in ok_json(client.get("/v2"))["extensions"]


def test_binary_inputs_answer_as_the_same_json_inputs(client: httpx.Client) -> None:
    document, data = multi_document()
    response = post_binary(client, "/v2/models/multi/infer", document, data)
    assert response.headers["content-type"].startswith("application/json")
    assert HEADER not in response.headers  # no output was asked for as binary
    assert response.json()["outputs"] == json_answer(client)["outputs"]


def test_binary_data_output_answers_every_output_as_binary(client: httpx.Client) -> None:
    document, data = multi_document(parameters={"binary_data_output": True})
    header, tail = answer_parts(post_binary(client, "/v2/models/multi/infer", document, data))
    pieces = binary_outputs(header, tail)
    expected = json_answer(client)["outputs"]
    assert set(pieces) == {output["name"] for output in expected}
    for output in expected:
        got = next(o for o in header["outputs"] if o["name"] == output["name"])
        assert (got["datatype"], got["shape"]) == (output["datatype"], output["shape"])
        dtype = BY_V2_NAME[output["datatype"]].numpy.newbyteorder("<")
        assert_same(np.frombuffer(pieces[output["name"]], dtype=dtype).tolist(), output["data"])


def test_only_the_outputs_asked_for_as_binary_are_binary(client: httpx.Client) -> None:
    """A JSON request may ask for binary outputs too; the others stay JSON."""
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": X}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    header, tail = answer_parts(client.post("/v2/models/plus/infer", json=body))
    (output,) = header["outputs"]
    assert output["parameters"] == {"binary_data_size": 12}
    assert_same(np.frombuffer(tail, dtype="<f4").tolist(), affine(2))


def test_bytes_in_and_out_as_binary(client: httpx.Client) -> None:
    """BYTES elements are 4-byte little-endian lengths and bytes, each way; bytes that are not
    UTF-8 pass unchanged."""
    values = [b"abc", "hé".encode(), b"\xff\x00z"]
    data = raw("BYTES", values)
    document = {
        "inputs": [binary_tensor("text", "BYTES", [3], data)],
        "outputs": [
            {"name": "echo_bytes", "parameters": {"binary_data": True}},
            {"name": "length"},
        ],
    }
    header, tail = answer_parts(post_binary(client, "/v2/models/text/infer", document, data))
    assert binary_outputs(header, tail) == {"echo_bytes": data}
    length = next(o for o in header["outputs"] if o["name"] == "length")
    assert_same(length["data"], [3, 3, 3])


def test_every_datatype_round_trips_as_binary(client: httpx.Client) -> None:
    inputs, chunks = [], []
    for label, _, _, datatype in DTYPES:
        chunks.append(raw(datatype, DTYPE_VALUES[label]))
        inputs.append(binary_tensor(f"x_{label}", datatype, [2], chunks[-1]))
    document = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    header, tail = answer_parts(
        post_binary(client, "/v2/models/dtypes/infer", document, b"".join(chunks))
    )
    pieces = binary_outputs(header, tail)
    for label, _, _, datatype in DTYPES:
        assert pieces[f"y_{label}"] == raw(datatype, DTYPE_VALUES[label]), label


def test_the_body_may_name_its_model_as_kserve_clients_do(client: httpx.Client) -> None:
    body = {
        "model_name": "plus",
        "model_version": "2",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": X}],
    }
    assert_same(
        ok_json(client.post("/v2/models/plus/infer", json=body))["outputs"][0]["data"], affine(2)
    )
    body["model_version"] = "1"  # the URL asks for the newest version, 2
    message = error_message(client.post("/v2/models/plus/infer", json=body), 400)
    assert mentions(message, "model_version") and mentions(message, "versions")
    body["model_version"] = "1"
    ok_json(client.post("/v2/models/plus/versions/1/infer", json=body))
    body["model_name"] = "multi"
    message = error_message(client.post("/v2/models/plus/versions/1/infer", json=body), 400)
    assert mentions(message, "multi") and mentions(message, "plus")


def _framed(document: dict[str, Any], data: bytes, length: int | None = None) -> tuple[bytes, str]:
    header = json.dumps(document).encode()
    return header + data, str(len(header) if length is None else length)


FP32_X = raw("FP32", X)


@pytest.mark.parametrize(
    ("document", "data", "length", "hint"),
    [
        pytest.param(
            {"inputs": [binary_tensor("x", "FP32", [3], FP32_X)]},
            FP32_X,
            10**6,
            "body",
            id="header-length-past-the-body",
        ),
        pytest.param(
            {"inputs": [binary_tensor("x", "FP32", [3], FP32_X)]},
            FP32_X,
            "twelve",
            HEADER,
            id="header-length-not-a-number",
        ),
        pytest.param(
            {"inputs": [binary_tensor("x", "FP32", [3], FP32_X)]},
            FP32_X + b"\0\0\0\0",
            None,
            "binary_data_size",
            id="bytes-left-over",
        ),
        pytest.param(
            {"inputs": [binary_tensor("x", "FP32", [3], FP32_X + b"\0\0\0\0")]},
            FP32_X,
            None,
            "binary_data_size",
            id="size-past-the-body",
        ),
        pytest.param(
            {"inputs": [binary_tensor("x", "FP32", [4], FP32_X[:8])]},
            FP32_X[:8],
            None,
            "bytes",
            id="size-wrong-for-the-shape",
        ),
        pytest.param(
            {"inputs": [{**binary_tensor("x", "FP32", [3], FP32_X), "data": X}]},
            FP32_X,
            None,
            "data",
            id="data-and-binary-size",
        ),
        pytest.param(
            {
                "inputs": [{**binary_tensor("x", "FP32", [3], FP32_X)}],
                "parameters": {"binary_data_output": "yes"},
            },
            FP32_X,
            None,
            "binary_data_output",
            id="flag-not-a-boolean",
        ),
        pytest.param(
            {
                "inputs": [
                    {
                        **binary_tensor("x", "FP32", [3], FP32_X),
                        "parameters": {"binary_data_size": -4},
                    }
                ]
            },
            FP32_X,
            None,
            "binary_data_size",
            id="negative-size",
        ),
    ],
)
def test_inconsistent_binary_requests_are_400(
    client: httpx.Client, document: dict[str, Any], data: bytes, length: Any, hint: str
) -> None:
    body, header_length = _framed(document, data, length if isinstance(length, int) else None)
    if isinstance(length, str):
        header_length = length
    response = client.post("/v2/models/plus/infer", content=body, headers={HEADER: header_length})
    assert mentions(error_message(response, 400), hint)


def test_a_binary_size_without_the_header_is_400(client: httpx.Client) -> None:
    document = {"inputs": [binary_tensor("x", "FP32", [3], FP32_X)]}
    message = error_message(client.post("/v2/models/plus/infer", json=document), 400)
    assert mentions(message, HEADER)


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        pytest.param(b"\x03\x00\x00", "length", id="cut-inside-a-length"),
        pytest.param(struct.pack("<I", 9) + b"abc", "9", id="element-past-its-size"),
        pytest.param(raw("BYTES", ["a"]), "elements", id="fewer-elements-than-the-shape"),
    ],
)
def test_malformed_bytes_data_is_400(client: httpx.Client, data: bytes, hint: str) -> None:
    document = {"inputs": [binary_tensor("text", "BYTES", [2], data)]}
    response = post_binary(client, "/v2/models/text/infer", document, data)
    assert mentions(error_message(response, 400), hint)


def test_a_bool_byte_other_than_0_or_1_is_400(client: httpx.Client) -> None:
    inputs, chunks = [], []
    for label, _, _, datatype in DTYPES:
        chunks.append(b"\x02\x00" if datatype == "BOOL" else raw(datatype, DTYPE_VALUES[label]))
        inputs.append(binary_tensor(f"x_{label}", datatype, [2], chunks[-1]))
    response = post_binary(client, "/v2/models/dtypes/infer", {"inputs": inputs}, b"".join(chunks))
    assert mentions(error_message(response, 400), "BOOL")
