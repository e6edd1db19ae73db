"""Unit tests for the dtype table (service/core/dtypes.py) and JSON <-> numpy tensors
(service/core/tensors.py). Pure functions: no model, no server."""

from __future__ import annotations

import base64
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from service.core.dtypes import BY_TF_NAME, BY_V2_NAME, DTYPES, from_tf_name, from_v2_name
from service.core.signatures import Shape, TensorInfo
from service.core.tensors import decode_tensor, encode_strings
from service.core.validation import check_shape, shape_fits
from service.errors import InvalidInputError

# The Open Inference Protocol's tensor datatypes and the TF DataType each one must map to,
# written out independently of service/core/dtypes.py.
EXPECTED_TABLE: list[tuple[str, str, Any]] = [
    ("BOOL", "DT_BOOL", np.bool_),
    ("UINT8", "DT_UINT8", np.uint8),
    ("UINT16", "DT_UINT16", np.uint16),
    ("UINT32", "DT_UINT32", np.uint32),
    ("UINT64", "DT_UINT64", np.uint64),
    ("INT8", "DT_INT8", np.int8),
    ("INT16", "DT_INT16", np.int16),
    ("INT32", "DT_INT32", np.int32),
    ("INT64", "DT_INT64", np.int64),
    ("FP16", "DT_HALF", np.float16),
    ("FP32", "DT_FLOAT", np.float32),
    ("FP64", "DT_DOUBLE", np.float64),
    ("BF16", "DT_BFLOAT16", ml_dtypes.bfloat16),
    ("BYTES", "DT_STRING", object),
]
V2_NAMES = [row[0] for row in EXPECTED_TABLE]
INTEGER_NAMES = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
FLOAT_NAMES = ["FP16", "FP32", "FP64", "BF16"]


def spec(v2_name: str, shape: Shape = None, name: str = "x") -> TensorInfo:
    return TensorInfo(name, from_v2_name(v2_name), shape)


def decode(value: Any, v2_name: str, *, allow_b64: bool = True, what: str = "input 'x'"):
    return decode_tensor(value, spec(v2_name), what=what, allow_b64=allow_b64)


def decode_error(value: Any, v2_name: str, *, allow_b64: bool = True) -> str:
    with pytest.raises(InvalidInputError) as info:
        decode(value, v2_name, allow_b64=allow_b64)
    assert info.value.message.startswith("input 'x': "), info.value.message
    return info.value.message


# --- dtypes ---------------------------------------------------------------------------------


def test_table_has_exactly_the_14_protocol_datatypes() -> None:
    assert len(DTYPES) == 14
    assert sorted(d.v2_name for d in DTYPES) == sorted(V2_NAMES)
    assert sorted(BY_V2_NAME) == sorted(V2_NAMES)
    # no two rows share a TF name or a numpy dtype
    assert len(BY_TF_NAME) == 14
    assert len({d.numpy for d in DTYPES}) == 14


@pytest.mark.parametrize(("v2_name", "tf_name", "numpy_type"), EXPECTED_TABLE)
def test_row_maps_both_ways(v2_name: str, tf_name: str, numpy_type: Any) -> None:
    by_v2 = from_v2_name(v2_name)
    by_tf = from_tf_name(tf_name)
    assert by_v2 is by_tf
    assert by_v2.v2_name == v2_name
    assert by_v2.tf_name == tf_name
    assert by_v2.numpy == np.dtype(numpy_type)
    assert BY_V2_NAME[v2_name] is BY_TF_NAME[tf_name]


@pytest.mark.parametrize(("v2_name", "tf_name", "numpy_type"), EXPECTED_TABLE)
def test_tf_name_is_the_real_tensorflow_type(v2_name: str, tf_name: str, numpy_type: Any) -> None:
    tf_dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(tf_name))
    assert np.dtype(tf_dtype.as_numpy_dtype) == from_v2_name(v2_name).numpy


@pytest.mark.parametrize("v2_name", V2_NAMES)
def test_dtype_kind_predicates(v2_name: str) -> None:
    dtype = from_v2_name(v2_name)
    assert dtype.is_string == (v2_name == "BYTES")
    assert dtype.is_bool == (v2_name == "BOOL")
    assert dtype.is_integer == (v2_name in INTEGER_NAMES)
    assert dtype.is_float == (v2_name in FLOAT_NAMES)


@pytest.mark.parametrize("name", ["FLOAT32", "fp32", "DT_FLOAT", "STRING", ""])
def test_unknown_v2_name_is_invalid_input_listing_valid_names(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        from_v2_name(name)
    message = info.value.message
    assert repr(name) in message
    for valid in V2_NAMES:
        assert valid in message
    assert info.value.http_status == 400


@pytest.mark.parametrize("name", ["DT_COMPLEX64", "DT_RESOURCE", "DT_VARIANT", "FP32", ""])
def test_unknown_tf_name_is_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="not supported") as info:
        from_tf_name(name)
    assert name in str(info.value)
    assert not isinstance(info.value, InvalidInputError)


# --- decode_tensor: numbers -----------------------------------------------------------------


def test_floats_and_ints_into_fp32_preserve_values() -> None:
    array = decode([[0.5, 1], [2, -3.25]], "FP32")
    assert array.dtype == np.float32
    assert array.shape == (2, 2)
    np.testing.assert_array_equal(array, np.array([[0.5, 1.0], [2.0, -3.25]], np.float32))


@pytest.mark.parametrize("v2_name", FLOAT_NAMES)
def test_ints_accepted_for_float_inputs(v2_name: str) -> None:
    array = decode([1, 2, -3], v2_name)
    assert array.dtype == from_v2_name(v2_name).numpy
    assert array.tolist() == [1.0, 2.0, -3.0]


def test_scalar_float_decodes_to_0d_array() -> None:
    array = decode(0.25, "FP64")
    assert array.shape == ()
    assert array.dtype == np.float64
    assert float(array) == 0.25


@pytest.mark.parametrize("v2_name", INTEGER_NAMES)
def test_fraction_into_integer_input_rejected(v2_name: str) -> None:
    message = decode_error([1, 1.5], v2_name)
    assert "integers" in message
    assert from_v2_name(v2_name).tf_name in message


def test_whole_float_into_int32_accepted_as_int() -> None:
    array = decode([2.0, -7.0], "INT32")
    assert array.dtype == np.int32
    assert array.tolist() == [2, -7]


@pytest.mark.parametrize(
    ("value", "v2_name"),
    [
        (300, "UINT8"),
        (-1, "UINT8"),
        (256, "UINT8"),
        (128, "INT8"),
        (-129, "INT8"),
        (65536, "UINT16"),
        (2**31, "INT32"),
        (-(2**31) - 1, "INT32"),
        (-1, "UINT64"),
        (300.0, "UINT8"),
    ],
)
def test_out_of_range_integer_rejected(value: Any, v2_name: str) -> None:
    message = decode_error([0, value], v2_name)
    assert "out of range" in message
    assert from_v2_name(v2_name).tf_name in message


@pytest.mark.parametrize(
    ("value", "v2_name"),
    [
        (255, "UINT8"),
        (0, "UINT8"),
        (-128, "INT8"),
        (127, "INT8"),
        (2**31 - 1, "INT32"),
        (-(2**63), "INT64"),
        (2**63 - 1, "INT64"),
        (2**64 - 1, "UINT64"),
    ],
)
def test_integer_range_limits_accepted_exactly(value: int, v2_name: str) -> None:
    array = decode([value], v2_name)
    assert array.dtype == from_v2_name(v2_name).numpy
    assert int(array[0]) == value


@pytest.mark.parametrize(
    ("value", "v2_name"),
    [
        ([2.0**63], "INT64"),  # float64(2**63) compares equal to float(INT64_MAX)
        ([2**63, -1], "INT64"),  # numpy makes this a float64 array
        ([2.0**64], "UINT64"),
    ],
)
def test_float_just_past_int64_or_uint64_max_rejected_not_wrapped(
    value: list[Any], v2_name: str
) -> None:
    message = decode_error(value, v2_name)
    assert "out of range" in message


@pytest.mark.parametrize(
    ("value", "v2_name"),
    [
        ([2**53 + 1, 1.0], "INT64"),  # float64 would round 2**53 + 1 to 2**53
        ([2**63 - 1, 2.0], "INT64"),
        ([2**64 - 1, 1.0], "UINT64"),
    ],
)
def test_large_ints_mixed_with_whole_floats_kept_exactly(value: list[Any], v2_name: str) -> None:
    array = decode(value, v2_name)
    assert array.dtype == from_v2_name(v2_name).numpy
    assert [int(v) for v in array] == [int(v) for v in value]


def test_1e39_into_fp32_rejected_as_out_of_range() -> None:
    message = decode_error([1.0, 1e39], "FP32")
    assert "out of range" in message
    assert "DT_FLOAT" in message


def test_1e39_into_fp64_accepted() -> None:
    array = decode([1e39], "FP64")
    assert array.dtype == np.float64
    assert array[0] == 1e39


def test_float_overflowing_fp16_rejected() -> None:
    assert "out of range" in decode_error([70000.0], "FP16")


def test_int_overflowing_fp16_rejected_not_turned_into_inf() -> None:
    assert "out of range" in decode_error([70000], "FP16")


def test_non_finite_floats_sent_by_the_client_are_kept() -> None:
    # NaN/Infinity the client sent (TF Serving's JSON allows them) are not "out of range".
    array = decode([float("nan"), float("inf"), -float("inf")], "FP32")
    assert array.dtype == np.float32
    assert np.isnan(array[0])
    assert array[1] == np.inf
    assert array[2] == -np.inf


@pytest.mark.parametrize("value", [["1.5"], "1.5", [1.0, "a"]])
def test_strings_into_fp32_rejected(value: Any) -> None:
    assert "strings" in decode_error(value, "FP32")


@pytest.mark.parametrize("value", [[1.0, None], [{"a": 1}], {"b64": "YQ=="}, None])
def test_objects_into_fp32_rejected(value: Any) -> None:
    message = decode_error(value, "FP32")
    assert "expected numbers (DT_FLOAT)" in message


@pytest.mark.parametrize("v2_name", ["FP32", "INT32", "UINT8"])
def test_booleans_into_numeric_input_rejected(v2_name: str) -> None:
    message = decode_error([True, False], v2_name)
    assert "booleans" in message


@pytest.mark.parametrize(
    ("value", "v2_name"),
    [([True, 1.5], "FP32"), ([1, False], "INT32"), ([[0.5], [True]], "FP64")],
)
def test_booleans_mixed_with_numbers_rejected_not_coerced_to_0_or_1(
    value: list[Any], v2_name: str
) -> None:
    # np.asarray([True, 1.5]) is float64 [1.0, 1.5]: the boolean silently becomes 1.0.
    assert "boolean" in decode_error(value, v2_name)


def test_all_boolean_list_rejected_even_when_caller_says_no_boolean_tokens() -> None:
    with pytest.raises(InvalidInputError, match="booleans"):
        decode_tensor(
            [True], spec("FP32"), what="input 'x'", allow_b64=False, booleans_possible=False
        )


def test_booleans_into_bool_accepted() -> None:
    array = decode([[True, False], [False, True]], "BOOL")
    assert array.dtype == np.bool_
    assert array.tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("value", [[0, 1], [1.0], [True, 1], ["true"]])
def test_numbers_or_strings_into_bool_rejected(value: list[Any]) -> None:
    message = decode_error(value, "BOOL")
    assert "expected booleans (DT_BOOL)" in message


@pytest.mark.parametrize("v2_name", ["FP32", "INT8", "BOOL"])
def test_empty_list_gives_empty_array_of_the_dtype(v2_name: str) -> None:
    array = decode([], v2_name)
    assert array.shape == (0,)
    assert array.dtype == from_v2_name(v2_name).numpy


@pytest.mark.parametrize("value", [[[1, 2], [3]], [[1], 2], [[[1, 2]], [[3, 4], [5, 6]]]])
def test_ragged_numeric_lists_rejected(value: Any) -> None:
    assert "ragged" in decode_error(value, "FP32")


def test_deep_numeric_nesting_is_invalid_input() -> None:
    value: Any = [1.0]
    for _ in range(200):
        value = [value]
    decode_error(value, "FP32")


# --- decode_tensor: strings -----------------------------------------------------------------


def test_strings_become_object_array_of_utf8_bytes() -> None:
    texts = ["hello", "naïve ☃", "", "😀"]
    array = decode(texts, "BYTES")
    assert array.dtype == object
    assert array.shape == (4,)
    assert list(array) == [t.encode("utf-8") for t in texts]
    assert all(type(item) is bytes for item in array)


def test_nested_string_lists_keep_their_shape() -> None:
    array = decode([["a", "b"], ["c", "naïve ☃"]], "BYTES")
    assert array.shape == (2, 2)
    assert array[1, 0] == b"c"
    assert array[1, 1] == "naïve ☃".encode()


def test_scalar_string_and_empty_string_list() -> None:
    scalar = decode("word", "BYTES")
    assert scalar.shape == ()
    assert scalar.item() == b"word"
    empty = decode([], "BYTES")
    assert empty.shape == (0,)
    assert empty.dtype == object
    nested_empty = decode([[], []], "BYTES")
    assert nested_empty.shape == (2, 0)


@pytest.mark.parametrize(
    "value", [[["a", "b"], ["c"]], [["a"], "b"], [[["a"]], [["b", "c"]]], ["a", ["b"]]]
)
def test_ragged_string_lists_rejected(value: Any) -> None:
    assert "ragged" in decode_error(value, "BYTES")


def test_b64_decoded_when_allowed() -> None:
    raw = b"\x00\xff\x89PNG"
    encoded = base64.b64encode(raw).decode()
    array = decode([{"b64": encoded}, "text"], "BYTES", allow_b64=True)
    assert array.tolist() == [raw, b"text"]


def test_b64_refused_when_not_allowed() -> None:
    message = decode_error([{"b64": "YQ=="}], "BYTES", allow_b64=False)
    assert "expected strings, got dict" in message


@pytest.mark.parametrize("encoded", ["not base64!!", "YQ", "Y===", "YQ==\n"])
def test_invalid_base64_rejected(encoded: str) -> None:
    assert "not valid base64" in decode_error([{"b64": encoded}], "BYTES")


@pytest.mark.parametrize("encoded", [5, None, ["YQ=="], {"b64": "YQ=="}])
def test_b64_holding_a_non_string_rejected(encoded: Any) -> None:
    assert "'b64' must hold a base64 string" in decode_error([{"b64": encoded}], "BYTES")


@pytest.mark.parametrize("value", [[{"b64": "YQ==", "extra": 1}], [{}], [1], [None], [True]])
def test_non_string_leaves_rejected(value: list[Any]) -> None:
    message = decode_error(value, "BYTES", allow_b64=True)
    assert 'expected strings or {"b64": "..."} objects' in message
    assert type(value[0]).__name__ in message


def test_deeply_nested_strings_are_invalid_input_not_recursion_error() -> None:
    # orjson accepts nesting up to 1024 levels; the string walker must not blow the stack.
    value: Any = "a"
    for _ in range(600):
        value = [value]
    decode_error(value, "BYTES")


# --- check_shape ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (0, 3)])
def test_check_shape_none_dimension_matches_any_size(shape: tuple[int, ...]) -> None:
    check_shape(np.zeros(shape), spec("FP32", (None, 3)), what="input 'x'")
    assert shape_fits(shape, (None, 3))


@pytest.mark.parametrize("shape", [(5, 4), (3,), (1, 1, 3), ()])
def test_check_shape_rejects_wrong_size_or_rank(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_shape(np.zeros(shape), spec("FP32", (None, 3), name="image"), what="input 'image'")
    message = info.value.message
    assert message.startswith("input 'image': ")
    assert "expected shape [-1, 3]" in message
    assert f"got {list(shape)}" in message


@pytest.mark.parametrize("shape", [(), (2,), (1, 2, 3, 4)])
def test_check_shape_unknown_rank_accepts_anything(shape: tuple[int, ...]) -> None:
    check_shape(np.zeros(shape), spec("FP32", None), what="input 'x'")
    assert shape_fits(shape, None)
    assert spec("FP32", None).shape_text() == "any shape"


def test_check_shape_scalar_signature() -> None:
    check_shape(np.zeros(()), spec("FP32", ()), what="input 'x'")
    with pytest.raises(InvalidInputError, match=r"expected shape \[\], got \[1\]"):
        check_shape(np.zeros((1,)), spec("FP32", ()), what="input 'x'")


def test_check_shape_fixed_dimensions_must_match() -> None:
    info = spec("FP32", (2, 28, 28))
    check_shape(np.zeros((2, 28, 28)), info, what="input 'x'")
    with pytest.raises(InvalidInputError, match=r"expected shape \[2, 28, 28\], got \[2, 28, 27\]"):
        check_shape(np.zeros((2, 28, 27)), info, what="input 'x'")


def test_tensor_info_v2_shape() -> None:
    assert spec("FP32", (None, 28, 28, 1)).v2_shape() == [-1, 28, 28, 1]
    assert spec("FP32", None).v2_shape() == []


# --- encode_strings -------------------------------------------------------------------------


def object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def test_encode_strings_utf8_text_comes_back_as_str() -> None:
    array = object_array([b"a", "naïve ☃".encode(), b"", "😀".encode()], (2, 2))
    assert encode_strings(array, as_b64=False) == [["a", "naïve ☃"], ["", "😀"]]


def test_encode_strings_non_utf8_bytes_come_back_as_b64() -> None:
    raw = b"\xff\xfe\x00"
    array = object_array([raw, b"ok"], (2,))
    encoded = encode_strings(array, as_b64=False)
    assert encoded[1] == "ok"
    assert set(encoded[0]) == {"b64"}
    assert base64.b64decode(encoded[0]["b64"]) == raw


def test_encode_strings_as_b64_forces_b64_even_for_text() -> None:
    array = object_array([b"text", b"\x00"], (2,))
    encoded = encode_strings(array, as_b64=True)
    assert encoded == [
        {"b64": base64.b64encode(b"text").decode()},
        {"b64": base64.b64encode(b"\x00").decode()},
    ]


def test_encode_strings_scalar() -> None:
    assert encode_strings(object_array([b"one"], ()), as_b64=False) == "one"
    assert encode_strings(object_array([b"one"], ()), as_b64=True) == {"b64": "b25l"}


def test_encode_then_decode_b64_round_trips_binary() -> None:
    raw = [bytes(range(256)), b"", b"\x80"]
    array = object_array(raw, (3,))
    decoded = decode(encode_strings(array, as_b64=True), "BYTES", allow_b64=True)
    assert decoded.tolist() == raw
