"""Unit tests for the REST codecs: TF Serving's row/columnar JSON (tfserving_codec), the Open
Inference Protocol V2 JSON tensors (v2_codec) and the JSON reader/writer (json_io).
Pure functions on hand-built signatures: no model, no server."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from service.core.dtypes import from_v2_name
from service.core.signatures import DEFAULT_SIGNATURE, PREDICT_METHOD, Shape, Signature, TensorInfo
from service.core.validation import check_call, check_outputs
from service.errors import InvalidInputError
from service.http import tfserving_codec as tfs
from service.http import v2_codec as v2
from service.http.json_io import JSONBody, json_array, parse_json, respond


def make_signature(
    inputs: dict[str, tuple[str, Shape]],
    outputs: dict[str, tuple[str, Shape]] | None = None,
    name: str = DEFAULT_SIGNATURE,
) -> Signature:
    def infos(specs: dict[str, tuple[str, Shape]]) -> dict[str, TensorInfo]:
        return {key: TensorInfo(key, from_v2_name(dt), shape) for key, (dt, shape) in specs.items()}

    return Signature(
        name=name,
        method_name=PREDICT_METHOD,
        inputs=infos(inputs),
        outputs=infos(outputs or {"y": ("FP32", (None,))}),
        definition=meta_graph_pb2.SignatureDef(),
    )


ONE_INPUT = make_signature({"x": ("FP32", (None, 2))})
TWO_INPUTS = make_signature({"a": ("FP32", (None,)), "b": ("INT64", (None, 2))})
TEXT_INPUT = make_signature({"text": ("BYTES", (None,))})


def as_json(payload: Any) -> Any:
    """What a client receives: the payload through orjson, numpy included."""
    return orjson.loads(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def error_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInputError) as info:
        call(*args, **kwargs)
    return info.value.message


# --- TF Serving: envelope -------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], [1, 2], "instances", 5, None, True])
def test_tfs_body_must_be_an_object(body: Any) -> None:
    assert "JSON object" in error_of(tfs.parse_predict_request, body)


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [1], "inputs": [1]},
        {},
        {"signature_name": "serving_default"},
    ],
)
def test_tfs_needs_exactly_one_of_instances_or_inputs(body: dict[str, Any]) -> None:
    assert "exactly one of 'instances'" in error_of(tfs.parse_predict_request, body)


def test_tfs_unknown_key_rejected_by_name() -> None:
    message = error_of(tfs.parse_predict_request, {"instances": [1], "examples": [], "foo": 1})
    assert "unknown request keys ['examples', 'foo']" in message


@pytest.mark.parametrize("name", [5, None, ["serving_default"], {"a": 1}])
def test_tfs_signature_name_must_be_a_string(name: Any) -> None:
    message = error_of(tfs.parse_predict_request, {"instances": [1], "signature_name": name})
    assert "'signature_name' must be a string" in message


def test_tfs_signature_name_defaults() -> None:
    assert tfs.parse_predict_request({"instances": [1]}).signature_name == "serving_default"
    empty = tfs.parse_predict_request({"instances": [1], "signature_name": ""})
    assert empty.signature_name == "serving_default"
    named = tfs.parse_predict_request({"inputs": [1], "signature_name": "classify"})
    assert named.signature_name == "classify"


def test_tfs_row_format_flag_and_row_count() -> None:
    rows = tfs.parse_predict_request({"instances": [1, 2, 3]})
    columns = tfs.parse_predict_request({"inputs": [1, 2, 3]})
    assert rows.row_format
    assert not columns.row_format
    assert tfs.row_count(rows) == 3
    assert tfs.row_count(columns) == 0


# --- TF Serving: decoding -------------------------------------------------------------------


def tfs_decode(body: dict[str, Any], signature: Signature) -> dict[str, np.ndarray]:
    """Decoded, then checked by the inference core as every request is."""
    arrays = tfs.decode_inputs(tfs.parse_predict_request(body), signature)
    check_call(signature, arrays)
    return arrays


def test_tfs_row_format_single_input_list_of_values() -> None:
    arrays = tfs_decode({"instances": [[1, 2.5], [3, 4]]}, ONE_INPUT)
    assert list(arrays) == ["x"]
    assert arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], np.array([[1, 2.5], [3, 4]], np.float32))


def test_tfs_row_format_single_input_list_of_named_objects() -> None:
    arrays = tfs_decode({"instances": [{"x": [1, 2.5]}, {"x": [3, 4]}]}, ONE_INPUT)
    np.testing.assert_array_equal(arrays["x"], np.array([[1, 2.5], [3, 4]], np.float32))


def test_tfs_row_format_single_input_wrong_object_key_named() -> None:
    message = error_of(tfs_decode, {"instances": [{"z": [1, 2]}]}, ONE_INPUT)
    assert "instances[0]" in message
    assert "missing input(s) ['x']" in message
    assert "unknown input(s) ['z']" in message


@pytest.mark.parametrize("instances", [[], {"x": [1, 2]}, "x", None])
def test_tfs_instances_must_be_a_non_empty_list(instances: Any) -> None:
    message = error_of(tfs_decode, {"instances": instances}, ONE_INPUT)
    assert "'instances' must be a non-empty list" in message


def test_tfs_row_format_shape_error_names_input_and_shapes() -> None:
    message = error_of(tfs_decode, {"instances": [[1, 2, 3]]}, ONE_INPUT)
    assert message == "input 'x': expected shape [-1, 2], got [1, 3]"


def test_tfs_row_format_dtype_error_names_input() -> None:
    message = error_of(tfs_decode, {"instances": [["a", "b"]]}, ONE_INPUT)
    assert message.startswith("input 'x': ")
    assert "strings" in message


def test_tfs_row_format_multi_input_objects() -> None:
    body = {"instances": [{"a": 1.5, "b": [1, 2]}, {"b": [3, 4], "a": -2}]}
    arrays = tfs_decode(body, TWO_INPUTS)
    assert set(arrays) == {"a", "b"}
    assert arrays["a"].dtype == np.float32
    assert arrays["a"].tolist() == [1.5, -2.0]
    assert arrays["b"].dtype == np.int64
    assert arrays["b"].tolist() == [[1, 2], [3, 4]]


def test_tfs_row_format_multi_input_missing_key_named() -> None:
    body = {"instances": [{"a": 1.0, "b": [1, 2]}, {"a": 2.0}]}
    message = error_of(tfs_decode, body, TWO_INPUTS)
    assert message.startswith("instances[1]: ")
    assert "missing input(s) ['b']" in message
    assert "['a', 'b']" in message


def test_tfs_row_format_multi_input_unknown_key_named() -> None:
    body = {"instances": [{"a": 1.0, "b": [1, 2], "c": 3}]}
    message = error_of(tfs_decode, body, TWO_INPUTS)
    assert message.startswith("instances[0]: ")
    assert "unknown input(s) ['c']" in message
    assert "missing" not in message


@pytest.mark.parametrize("bad", [[1.0, [1, 2]], 5, {"b64": "YQ=="}])
def test_tfs_row_format_multi_input_non_object_instance(bad: Any) -> None:
    body = {"instances": [{"a": 1.0, "b": [1, 2]}, bad]}
    message = error_of(tfs_decode, body, TWO_INPUTS)
    assert message.startswith("instances[1]: ")
    assert "object keyed by input name" in message


def test_tfs_columnar_single_input_bare_value() -> None:
    arrays = tfs_decode({"inputs": [[1, 2], [3, 4], [5, 6]]}, ONE_INPUT)
    assert arrays["x"].shape == (3, 2)
    assert arrays["x"].dtype == np.float32


def test_tfs_columnar_single_input_named_object() -> None:
    arrays = tfs_decode({"inputs": {"x": [[1, 2]]}}, ONE_INPUT)
    np.testing.assert_array_equal(arrays["x"], np.array([[1, 2]], np.float32))


def test_tfs_columnar_multi_input_object() -> None:
    arrays = tfs_decode({"inputs": {"a": [1.0, 2.0, 3.0], "b": [[1, 2]]}}, TWO_INPUTS)
    # columnar inputs need not share a batch size
    assert arrays["a"].shape == (3,)
    assert arrays["b"].shape == (1, 2)


def test_tfs_columnar_multi_input_missing_key() -> None:
    message = error_of(tfs_decode, {"inputs": {"a": [1.0]}}, TWO_INPUTS)
    assert message.startswith("'inputs': ")
    assert "missing input(s) ['b']" in message


def test_tfs_columnar_multi_input_bare_list_rejected() -> None:
    message = error_of(tfs_decode, {"inputs": [[1, 2]]}, TWO_INPUTS)
    assert "['a', 'b']" in message
    assert "must be an object keyed by input name" in message


def test_tfs_row_format_b64_for_string_input() -> None:
    raw = b"\x89PNG\x00\xff"
    body = {"instances": [{"b64": base64.b64encode(raw).decode()}, "plain ☃"]}
    arrays = tfs_decode(body, TEXT_INPUT)
    assert arrays["text"].dtype == object
    assert arrays["text"].tolist() == [raw, "plain ☃".encode()]


def test_tfs_b64_inside_named_objects() -> None:
    signature = make_signature({"image_bytes": ("BYTES", (None,)), "k": ("INT32", (None,))})
    body = {"instances": [{"image_bytes": {"b64": "AAE="}, "k": 3}]}
    arrays = tfs_decode(body, signature)
    assert arrays["image_bytes"].tolist() == [b"\x00\x01"]
    assert arrays["k"].tolist() == [3]


def test_tfs_columnar_single_b64_value_is_a_value_not_named_object() -> None:
    signature = make_signature({"blob": ("BYTES", None)})
    arrays = tfs_decode({"inputs": {"b64": "aGk="}}, signature)
    assert arrays["blob"].shape == ()
    assert arrays["blob"].item() == b"hi"


def test_tfs_invalid_b64_rejected_naming_input() -> None:
    message = error_of(tfs_decode, {"instances": [{"b64": "***"}]}, TEXT_INPUT)
    assert message.startswith("input 'text': ")
    assert "base64" in message


def test_tfs_booleans_mixed_with_numbers_rejected() -> None:
    message = error_of(tfs_decode, {"instances": [[1.0, True]]}, ONE_INPUT)
    assert message.startswith("input 'x': ")
    assert "booleans" in message


def test_tfs_lone_surrogate_via_nan_fallback_is_invalid_input() -> None:
    # orjson refuses "\ud800"; the stdlib fallback used for NaN bodies accepts it, and the
    # string cannot then be encoded as UTF-8.
    body = parse_json(
        b'{"instances": [{"a": NaN, "s": "\\ud800"}]}',
        allow_non_finite=True,
    )
    signature = make_signature({"a": ("FP32", (None,)), "s": ("BYTES", (None,))})
    with pytest.raises(InvalidInputError):
        tfs.decode_inputs(tfs.parse_predict_request(body), signature)


# --- TF Serving: encoding -------------------------------------------------------------------


def row_request(n: int) -> tfs.PredictRequest:
    return tfs.parse_predict_request({"instances": [[0.0, 0.0]] * n})


COLUMNAR = tfs.parse_predict_request({"inputs": [[0.0, 0.0]]})


def test_tfs_encode_one_output_row_format_is_bare_list() -> None:
    y = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    answer = tfs.encode_outputs(row_request(2), {"probabilities": y}, batch_size=2)
    assert list(answer) == ["predictions"]
    assert as_json(answer) == {"predictions": [[0.25, 0.75], [0.5, 0.5]]}


def test_tfs_encode_one_output_columnar_is_bare_value() -> None:
    y = np.array([[1, 2, 3]], np.int64)
    answer = tfs.encode_outputs(COLUMNAR, {"ids": y}, batch_size=0)
    assert as_json(answer) == {"outputs": [[1, 2, 3]]}


def test_tfs_encode_multi_outputs_row_format_is_list_of_objects() -> None:
    outputs = {
        "scores": np.array([[0.5, 0.5], [1.0, 0.0]], np.float32),
        "label": np.array([3, 7], np.int64),
    }
    answer = tfs.encode_outputs(row_request(2), outputs, batch_size=2)
    assert as_json(answer) == {
        "predictions": [
            {"scores": [0.5, 0.5], "label": 3},
            {"scores": [1.0, 0.0], "label": 7},
        ]
    }


def test_tfs_encode_multi_outputs_columnar_is_object() -> None:
    outputs = {
        "scores": np.array([[0.5, 0.5]], np.float32),
        "label": np.array([3], np.int64),
    }
    answer = tfs.encode_outputs(COLUMNAR, outputs, batch_size=0)
    assert as_json(answer) == {"outputs": {"scores": [[0.5, 0.5]], "label": [3]}}


def test_tfs_encode_bytes_suffix_outputs_are_b64_others_text() -> None:
    outputs = {
        "image_bytes": np.array([b"png"], dtype=object),
        "label": np.array([b"cat"], dtype=object),
        "raw": np.array([b"\xff\xfe"], dtype=object),
    }
    answer = tfs.encode_outputs(row_request(1), outputs, batch_size=1)
    assert as_json(answer) == {
        "predictions": [
            {
                "image_bytes": {"b64": base64.b64encode(b"png").decode()},
                "label": "cat",
                "raw": {"b64": base64.b64encode(b"\xff\xfe").decode()},
            }
        ]
    }


def test_tfs_encode_bfloat16_output_as_numbers() -> None:
    y = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    answer = tfs.encode_outputs(COLUMNAR, {"y": y}, batch_size=0)
    assert as_json(answer) == {"outputs": [1.5, -2.0]}


@pytest.mark.parametrize(
    "array", [np.array(1.0, np.float32), np.zeros((3, 2), np.float32), np.zeros((1,))]
)
def test_tfs_encode_row_format_needs_one_row_per_instance(array: np.ndarray) -> None:
    outputs = {"ok": np.zeros((2, 4), np.float32), "summary": array}
    with pytest.raises(InvalidInputError) as info:
        tfs.encode_outputs(row_request(2), outputs, batch_size=2)
    message = info.value.message
    assert "output 'summary'" in message
    assert f"shape {list(array.shape)}" in message
    assert "columnar" in message


def test_tfs_encode_columnar_does_not_need_rows() -> None:
    outputs = {"summary": np.array([4.0], np.float32), "rows": np.zeros((3, 2), np.float32)}
    answer = tfs.encode_outputs(COLUMNAR, outputs, batch_size=2)
    assert as_json(answer) == {"outputs": {"summary": [4.0], "rows": [[0.0, 0.0]] * 3}}


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, ml_dtypes.bfloat16])
def test_tfs_encode_columnar_scalar_output_is_a_bare_value(dtype: Any) -> None:
    # TF Serving writes a 0-d output tensor as a bare JSON value, not a one-element list.
    outputs = {"summary": np.array(1, dtype), "rows": np.zeros((3, 2), np.float32)}
    answer = tfs.encode_outputs(COLUMNAR, outputs, batch_size=0)
    body = bytes(respond(answer, outputs.values()).body)
    expected = True if dtype is np.bool_ else 1
    assert orjson.loads(body) == {"outputs": {"summary": expected, "rows": [[0.0, 0.0]] * 3}}


# --- V2: request envelope -------------------------------------------------------------------


def v2_body(**extra: Any) -> dict[str, Any]:
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    return {"inputs": [tensor], **extra}


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_v2_body_must_be_an_object(body: Any) -> None:
    assert "JSON object" in error_of(v2.parse_infer_request, body)


def test_v2_unknown_top_level_key() -> None:
    message = error_of(v2.parse_infer_request, v2_body(instances=[1]))
    assert "unknown request keys ['instances']" in message


@pytest.mark.parametrize("request_id", [5, 1.5, ["a"], {"a": 1}, True])
def test_v2_id_must_be_a_string(request_id: Any) -> None:
    assert "'id' must be a string" in error_of(v2.parse_infer_request, v2_body(id=request_id))


@pytest.mark.parametrize("body", [{}, {"inputs": []}, {"inputs": "x"}, {"inputs": {"x": 1}}])
def test_v2_inputs_must_be_a_non_empty_list(body: dict[str, Any]) -> None:
    assert "'inputs' must be a non-empty list" in error_of(v2.parse_infer_request, body)


@pytest.mark.parametrize("tensor", [5, "x", [1, 2], None])
def test_v2_each_input_must_be_an_object(tensor: Any) -> None:
    body = {"inputs": [v2_body()["inputs"][0], tensor]}
    assert "inputs[1] must be an object" in error_of(v2.parse_infer_request, body)


@pytest.mark.parametrize(
    "outputs", ["y", {"name": "y"}, [5], [{"nam": "y"}], [{"name": 5}], [{"name": "y"}, "z"]]
)
def test_v2_outputs_malformed(outputs: Any) -> None:
    message = error_of(v2.parse_infer_request, v2_body(outputs=outputs))
    assert "'outputs' must be a list of objects with a 'name'" in message


@pytest.mark.parametrize("parameters", ["x", 5, [], [1], False])
def test_v2_parameters_must_be_an_object(parameters: Any) -> None:
    message = error_of(v2.parse_infer_request, v2_body(parameters=parameters))
    assert "'parameters' must be an object" in message


def test_v2_signature_name_parameter() -> None:
    assert v2.parse_infer_request(v2_body()).signature_name == "serving_default"
    named = v2.parse_infer_request(v2_body(parameters={"signature_name": "other"}))
    assert named.signature_name == "other"
    message = error_of(v2.parse_infer_request, v2_body(parameters={"signature_name": 3}))
    assert "signature_name must be a string" in message


def test_v2_parse_keeps_id_and_output_names() -> None:
    request = v2.parse_infer_request(v2_body(id="req-1", outputs=[{"name": "y"}, {"name": "z"}]))
    assert request.id == "req-1"
    assert request.output_names == ["y", "z"]
    assert v2.parse_infer_request(v2_body()).id is None


# --- V2: decoding ---------------------------------------------------------------------------


def v2_decode(*tensors: dict[str, Any], signature: Signature = ONE_INPUT) -> dict[str, Any]:
    """Decoded, then checked by the inference core as every request is."""
    arrays = v2.decode_inputs(v2.parse_infer_request({"inputs": list(tensors)}), signature)
    check_call(signature, arrays)
    return arrays


def fp32_x(shape: Any, data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "shape": shape, "datatype": "FP32", "data": data, **extra}


def test_v2_flat_and_nested_data_give_the_same_array() -> None:
    flat = v2_decode(fp32_x([2, 2], [1, 2, 3, 4.5]))["x"]
    nested = v2_decode(fp32_x([2, 2], [[1, 2], [3, 4.5]]))["x"]
    assert flat.shape == nested.shape == (2, 2)
    assert flat.dtype == nested.dtype == np.float32
    np.testing.assert_array_equal(flat, nested)
    np.testing.assert_array_equal(flat, np.array([[1, 2], [3, 4.5]], np.float32))


def test_v2_element_count_mismatch_names_both_numbers() -> None:
    message = error_of(v2_decode, fp32_x([2, 2], [1, 2, 3]))
    assert message.startswith("input 'x': ")
    assert "holds 4 elements but 'data' has 3" in message


@pytest.mark.parametrize(
    "shape", [[-1, 2], [1, 2.0], ["1", 2], [True, 2], [1, None], "1,2", None, 2, {"a": 1}]
)
def test_v2_shape_must_be_non_negative_integers(shape: Any) -> None:
    message = error_of(v2_decode, fp32_x(shape, [1, 2]))
    assert message.startswith("input 'x': ")
    assert "'shape' must be a list of non-negative integers" in message


def test_v2_shape_checked_against_signature() -> None:
    message = error_of(v2_decode, fp32_x([2, 3], [1, 2, 3, 4, 5, 6]))
    assert message == "input 'x': expected shape [-1, 2], got [2, 3]"


def test_v2_datatype_mismatch_names_both() -> None:
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}
    message = error_of(v2_decode, tensor)
    assert message.startswith("input 'x': ")
    assert "FP64" in message
    assert "FP32" in message


@pytest.mark.parametrize("datatype", [None, 5])
def test_v2_datatype_must_be_a_string(datatype: Any) -> None:
    tensor = {"name": "x", "shape": [1, 2], "data": [1, 2], "datatype": datatype}
    message = error_of(v2_decode, tensor)
    assert "'datatype' must be a string such as 'FP32'" in message


def test_v2_unknown_datatype_lists_valid_names() -> None:
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FLOAT32", "data": [1, 2]}
    message = error_of(v2_decode, tensor)
    assert "'FLOAT32'" in message
    assert "FP32" in message
    assert "BYTES" in message


def test_v2_unknown_input() -> None:
    tensor = {"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}
    message = error_of(v2_decode, tensor)
    assert "unknown input(s) ['image']" in message
    assert "['x']" in message


def test_v2_duplicate_input() -> None:
    tensor = fp32_x([1, 2], [1, 2])
    assert "input 'x' is given twice" in error_of(v2_decode, tensor, dict(tensor))


def test_v2_missing_input() -> None:
    tensor = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
    message = error_of(v2_decode, tensor, signature=TWO_INPUTS)
    assert "missing input(s) ['b']" in message


@pytest.mark.parametrize("name", [None, 5, ["x"]])
def test_v2_input_name_must_be_a_string(name: Any) -> None:
    tensor = {"name": name, "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    assert "inputs[0]: 'name' must be a string" in error_of(v2_decode, tensor)


def test_v2_unknown_tensor_key_and_missing_data() -> None:
    message = error_of(v2_decode, fp32_x([1, 2], [1, 2], contents={}))
    assert message == "input 'x': unknown keys ['contents']"
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP32"}
    assert "input 'x': 'data' is missing" in error_of(v2_decode, tensor)


def test_v2_bytes_data() -> None:
    tensor = {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "naïve ☃", ""]}
    arrays = v2_decode(tensor, signature=TEXT_INPUT)
    assert arrays["text"].dtype == object
    assert arrays["text"].tolist() == [b"a", "naïve ☃".encode(), b""]


def test_v2_bytes_data_does_not_take_b64_objects() -> None:
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [{"b64": "YQ=="}]}
    message = error_of(v2_decode, tensor, signature=TEXT_INPUT)
    assert "expected strings, got dict" in message


def test_v2_bool_and_int_data() -> None:
    signature = make_signature({"mask": ("BOOL", (None,)), "ids": ("INT64", (None,))})
    arrays = v2_decode(
        {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        {"name": "ids", "shape": [2], "datatype": "INT64", "data": [2**62, -1]},
        signature=signature,
    )
    assert arrays["mask"].dtype == np.bool_
    assert arrays["mask"].tolist() == [True, False]
    assert arrays["ids"].dtype == np.int64
    assert arrays["ids"].tolist() == [2**62, -1]


def test_v2_fraction_in_int_data_rejected() -> None:
    signature = make_signature({"ids": ("INT32", (None,))})
    tensor = {"name": "ids", "shape": [2], "datatype": "INT32", "data": [1, 1.5]}
    assert "integers" in error_of(v2_decode, tensor, signature=signature)


def test_v2_huge_shape_with_two_elements_is_invalid_input_not_memory_error() -> None:
    message = error_of(v2_decode, fp32_x([1000000, 1000000], [1, 2]))
    assert "1000000000000" in message
    assert "has 2" in message


@pytest.mark.parametrize(
    "shape",
    [
        [0, 2**63],  # zero elements, but a dimension numpy cannot represent
        [0, 10**30],
        [1] * 65,  # one element, more dimensions than numpy supports
    ],
)
def test_v2_shape_numpy_cannot_build_is_invalid_input_not_value_error(shape: list[int]) -> None:
    data: list[float] = [] if 0 in shape else [1.0]
    signature = make_signature({"x": ("FP32", None)})
    error_of(v2_decode, fp32_x(shape, data), signature=signature)


def test_v2_scalar_shape() -> None:
    signature = make_signature({"x": ("FP32", ())})
    array = v2_decode(fp32_x([], [2.5]), signature=signature)["x"]
    assert array.shape == ()
    assert float(array) == 2.5


def test_v2_check_outputs() -> None:
    signature = make_signature({"x": ("FP32", None)}, {"y": ("FP32", None), "z": ("FP32", None)})

    def check(body: dict[str, Any]) -> None:
        check_outputs(signature, v2.parse_infer_request(body).output_names)

    check(v2_body(outputs=[{"name": "z"}]))
    check(v2_body())
    message = error_of(check, v2_body(outputs=[{"name": "y"}, {"name": "w"}]))
    assert "unknown output(s) ['w']" in message
    assert "['y', 'z']" in message


# --- V2: encoding ---------------------------------------------------------------------------


def test_v2_encode_outputs_flat_data_shape_and_datatypes() -> None:
    request = v2.parse_infer_request(v2_body())
    outputs = {
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        "ids": np.array([[1], [2]], np.int64),
        "labels": np.array([[b"cat", b"dog"]], dtype=object),
        "mask": np.array([True, False]),
        "half": np.array([1.5], np.float16),
        "brain": np.array([2.0], ml_dtypes.bfloat16),
        "small": np.array([3], np.uint8),
    }
    answer, binary = v2.encode_outputs(request, outputs, "digits", 3)
    assert binary == []  # no output asked for as binary
    assert as_json(answer) == {
        "model_name": "digits",
        "model_version": "3",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": [0.25, 0.75, 0.5, 0.5],
            },
            {"name": "ids", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]},
            {"name": "labels", "datatype": "BYTES", "shape": [1, 2], "data": ["cat", "dog"]},
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "half", "datatype": "FP16", "shape": [1], "data": [1.5]},
            {"name": "brain", "datatype": "BF16", "shape": [1], "data": [2.0]},
            {"name": "small", "datatype": "UINT8", "shape": [1], "data": [3]},
        ],
    }


def test_v2_encode_scalar_output() -> None:
    request = v2.parse_infer_request(v2_body())
    answer, _ = v2.encode_outputs(request, {"y": np.array(4.0, np.float64)}, "m", 1)
    assert as_json(answer)["outputs"] == [
        {"name": "y", "datatype": "FP64", "shape": [], "data": [4.0]}
    ]


def test_v2_id_echoed_only_when_given() -> None:
    outputs = {"y": np.zeros((1,), np.float32)}
    with_id, _ = v2.encode_outputs(v2.parse_infer_request(v2_body(id="abc")), outputs, "m", 1)
    without, _ = v2.encode_outputs(v2.parse_infer_request(v2_body()), outputs, "m", 1)
    assert with_id["id"] == "abc"
    assert "id" not in without
    empty, _ = v2.encode_outputs(v2.parse_infer_request(v2_body(id="")), outputs, "m", 1)
    assert empty["id"] == ""


# --- json_io --------------------------------------------------------------------------------


def test_parse_json_valid() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x", true, null]}') == {"a": [1, 2.5, "x", True, None]}


def test_parse_json_empty_body() -> None:
    assert "empty" in error_of(parse_json, b"")


@pytest.mark.parametrize("body", [b'{"a": ', b"{'a': 1}", b"[1, 2,]", b"\xff\xfe", b"nul"])
def test_parse_json_malformed_has_message(body: bytes) -> None:
    message = error_of(parse_json, body)
    assert message.startswith("malformed JSON body: ")
    assert len(message) > len("malformed JSON body: ")


@pytest.mark.parametrize("allow_non_finite", [False, True])
@pytest.mark.parametrize("middle", [b"", b"NaN"])
def test_parse_json_deep_nesting_is_invalid_input(allow_non_finite: bool, middle: bytes) -> None:
    body = b"[" * 100_000 + middle + b"]" * 100_000
    message = error_of(parse_json, body, allow_non_finite=allow_non_finite)
    assert message.startswith("malformed JSON body")


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_json_non_finite_only_when_allowed(token: bytes) -> None:
    body = b'{"instances": [1.0, ' + token + b"]}"
    assert "malformed JSON body" in error_of(parse_json, body)
    value = parse_json(body, allow_non_finite=True)["instances"][1]
    expected = {b"NaN": math.nan, b"Infinity": math.inf, b"-Infinity": -math.inf}[token]
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == expected


def test_parse_json_nan_fallback_still_reports_malformed_json() -> None:
    message = error_of(parse_json, b'{"a": [NaN, }', allow_non_finite=True)
    assert message.startswith("malformed JSON body")


def test_respond_with_nan_output_writes_nan_tokens() -> None:
    y = np.array([np.nan, np.inf, -np.inf, 0.5], np.float32)
    response = respond({"predictions": json_array(y)}, [y])
    body = bytes(response.body)
    assert b"NaN" in body
    assert b"Infinity" in body
    assert b"null" not in body
    assert response.media_type == "application/json"
    decoded = json.loads(body)["predictions"]
    assert math.isnan(decoded[0])
    assert decoded[1:] == [math.inf, -math.inf, 0.5]


def test_respond_non_finite_path_keeps_float32_shortest_repr() -> None:
    y = np.array([np.nan, 0.1], np.float32)
    body = bytes(respond({"predictions": json_array(y)}, [y]).body)
    assert b"0.1]" in body
    assert b"0.10000000149011612" not in body


def test_respond_with_bfloat16_nan_output_writes_nan_token() -> None:
    y = np.array([np.nan, 1.5], ml_dtypes.bfloat16)
    body = bytes(respond({"outputs": json_array(y)}, [y]).body)
    assert b"NaN" in body
    assert b"null" not in body


def test_respond_with_finite_outputs_uses_orjson() -> None:
    y = np.array([0.1, 0.2, 1e-8], np.float32)
    ids = np.array([1, 2], np.int64)
    response = respond({"predictions": json_array(y), "ids": json_array(ids)}, [y, ids])
    assert isinstance(response, JSONBody)
    body = bytes(response.body)
    assert orjson.loads(body) == {"predictions": [0.1, 0.2, 1e-8], "ids": [1, 2]}
    assert b"0.1," in body  # float32 shortest repr, not 0.10000000149011612
    assert b"0.10000000149011612" not in body
    assert response.status_code == 200


def test_respond_status_code() -> None:
    assert respond({"error": "x"}, status_code=400).status_code == 400


def test_json_array_bytes_and_text_arrays() -> None:
    assert json_array(np.array([b"a", b"\xff"], dtype=object)) == ["a", {"b64": "/w=="}]
    assert json_array(np.array([b"a"], dtype=object), binary=True) == [{"b64": "YQ=="}]
    assert json_array(np.array([b"a", b"bc"])) == ["a", "bc"]  # numpy bytes_ ("S") array


def test_json_array_unicode_array() -> None:
    assert json_array(np.array(["a", "naïve"])) == ["a", "naïve"]
