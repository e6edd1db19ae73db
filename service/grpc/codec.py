"""TensorProto <-> numpy for the gRPC API, with the same strictness as the REST codecs.

The conversion itself is TensorFlow's (`tf.make_ndarray`, `tf.make_tensor_proto`), so every
representation a TF Serving client may send (packed `tensor_content`, typed `*_val` fields,
strings) is read as TF Serving reads it. Before it, a request is checked without allocating:
the dtype must be the input's, the shape known and non-negative, and the number of values must
be exactly the shape's element count (TensorFlow would quietly repeat the last value of a short
list; a client sending too few values has a bug we report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from service.core.decoding import object_array
from service.core.dtypes import from_tf_name
from service.core.signatures import Signature
from service.core.validation import check_names
from service.errors import InvalidInputError
from service.grpc.message_split import Strings

# The typed value field of each dtype (DT_HALF and DT_BFLOAT16 travel as half_val ints).
_VALUE_FIELDS = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT8": "int_val",
    "DT_INT16": "int_val",
    "DT_INT32": "int_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
    "DT_HALF": "half_val",
    "DT_BFLOAT16": "half_val",
}


def decode_inputs(
    inputs: Mapping[str, tensor_pb2.TensorProto],
    signature: Signature,
    split_strings: Mapping[str, Strings] | None = None,
) -> dict[str, np.ndarray]:
    """The inputs as arrays; `split_strings` holds the `string_val` of inputs whose strings were
    taken out of a large message (`service.grpc.message_split`)."""
    split_strings = split_strings or {}
    check_names(signature, inputs)
    return {
        name: decode_tensor(inputs[name], signature, name, split_strings.get(name))
        for name in signature.inputs
    }


def declared_rows(inputs: Mapping[str, tensor_pb2.TensorProto]) -> int:
    """The most rows (first dimension) any input's shape declares: known before the values
    are decoded, so that a request too large to admit costs nothing more."""
    return max(
        (proto.tensor_shape.dim[0].size for proto in inputs.values() if proto.tensor_shape.dim),
        default=0,
    )


def decode_tensor(
    proto: tensor_pb2.TensorProto,
    signature: Signature,
    name: str,
    split_strings: Strings | None = None,
) -> np.ndarray:
    spec = signature.inputs[name]
    what = f"input {name!r}"
    sent = (
        types_pb2.DataType.Name(proto.dtype)
        if proto.dtype in types_pb2.DataType.values()
        else str(proto.dtype)
    )
    if sent != spec.dtype.tf_name:
        raise InvalidInputError(f"{what}: expected dtype {spec.dtype.tf_name}, got {sent}")
    if proto.tensor_shape.unknown_rank:
        raise InvalidInputError(f"{what}: the tensor's shape must be given")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise InvalidInputError(f"{what}: negative dimension in shape {shape}")
    elements = math.prod(shape)
    string_count = len(proto.string_val if split_strings is None else split_strings)
    _check_value_count(proto, spec.dtype.tf_name, elements, shape, what, string_count)
    if spec.dtype.is_string:  # TensorFlow would convert millions of them in one GIL hold
        if split_strings is None:
            return object_array(proto.string_val).reshape(shape)
        return split_strings.array().reshape(shape)
    try:
        array: np.ndarray = tf.make_ndarray(proto)
    except OverflowError:  # int_val / half_val are int32 on the wire, wider than int8 or half
        raise InvalidInputError(
            f"{what}: a value is out of range for {spec.dtype.tf_name}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what}: malformed TensorProto: {exc}") from None
    return array


def _check_value_count(
    proto: tensor_pb2.TensorProto,
    dtype: str,
    elements: int,
    shape: list[int],
    what: str,
    string_count: int,
) -> None:
    if proto.tensor_content:
        if dtype == "DT_STRING":
            raise InvalidInputError(
                f"{what}: DT_STRING values travel in string_val, not tensor_content"
            )
        itemsize = from_tf_name(dtype).numpy.itemsize
        if len(proto.tensor_content) != elements * itemsize:
            raise InvalidInputError(
                f"{what}: tensor_content holds {len(proto.tensor_content)} bytes; shape "
                f"{shape} of {dtype} needs {elements * itemsize}"
            )
        return
    field = _VALUE_FIELDS[dtype]
    count = string_count if field == "string_val" else len(getattr(proto, field))
    if count != elements:
        raise InvalidInputError(f"{what}: {count} values for shape {shape} ({elements} elements)")


def encode_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, tensor_pb2.TensorProto]:
    return {name: tf.make_tensor_proto(array) for name, array in outputs.items()}
