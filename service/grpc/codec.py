"""TensorProto <-> numpy for the gRPC API, converted by TensorFlow as TF Serving does. Checked
first without allocating: the input's dtype, a known non-negative shape, and exactly its element
count of values (TensorFlow would quietly repeat the last value of a short list)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from service.core.decoding import object_array
from service.core.signatures import Signature, TensorInfo
from service.core.validation import check_names
from service.errors import InvalidInputError
from service.grpc.message_split import Strings

# The typed value field of each dtype (DT_HALF and DT_BFLOAT16 travel as half_val ints).
_VALUE_FIELDS = {
    **dict.fromkeys(("DT_INT8", "DT_INT16", "DT_INT32", "DT_UINT8", "DT_UINT16"), "int_val"),
    **dict.fromkeys(("DT_HALF", "DT_BFLOAT16"), "half_val"),
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
}


def decode_inputs(
    inputs: Mapping[str, tensor_pb2.TensorProto],
    signature: Signature,
    split_strings: Mapping[str, Strings],
) -> dict[str, np.ndarray]:
    """The inputs as arrays; `split_strings` holds the `string_val` of inputs whose strings were
    taken out of a large message (`service.grpc.message_split`)."""
    check_names(signature, inputs)
    return {
        name: _decode_tensor(inputs[name], spec, f"input {name!r}", split_strings.get(name))
        for name, spec in signature.inputs.items()
    }


def declared_rows(inputs: Mapping[str, tensor_pb2.TensorProto]) -> int:
    """The most rows (first dimension) any input's shape declares: known before the values
    are decoded, so that a request too large to admit costs nothing more."""
    return max(
        (proto.tensor_shape.dim[0].size for proto in inputs.values() if proto.tensor_shape.dim),
        default=0,
    )


def _decode_tensor(
    proto: tensor_pb2.TensorProto, spec: TensorInfo, what: str, split_strings: Strings | None
) -> np.ndarray:
    dtype = spec.dtype.tf_name
    sent = (
        types_pb2.DataType.Name(proto.dtype)
        if proto.dtype in types_pb2.DataType.values()
        else str(proto.dtype)
    )
    if sent != dtype:
        raise InvalidInputError(f"{what}: expected dtype {dtype}, got {sent}")
    if proto.tensor_shape.unknown_rank:
        raise InvalidInputError(f"{what}: the tensor's shape must be given")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise InvalidInputError(f"{what}: negative dimension in shape {shape}")
    elements = math.prod(shape)
    if proto.tensor_content:
        if spec.dtype.is_string:
            raise InvalidInputError(
                f"{what}: DT_STRING values travel in string_val, not tensor_content"
            )
        needed = elements * spec.dtype.numpy.itemsize
        if len(proto.tensor_content) != needed:
            raise InvalidInputError(
                f"{what}: tensor_content holds {len(proto.tensor_content)} bytes; shape "
                f"{shape} of {dtype} needs {needed}"
            )
    else:
        strings = proto.string_val if split_strings is None else split_strings
        count = len(strings if spec.dtype.is_string else getattr(proto, _VALUE_FIELDS[dtype]))
        if count != elements:
            raise InvalidInputError(
                f"{what}: {count} values for shape {shape} ({elements} elements)"
            )
    if spec.dtype.is_string:  # TensorFlow would convert millions of them in one GIL hold
        if split_strings is None:
            return object_array(proto.string_val).reshape(shape)
        return split_strings.array().reshape(shape)
    try:
        array: np.ndarray = tf.make_ndarray(proto)
    except OverflowError:  # int_val / half_val are int32 on the wire, wider than int8 or half
        raise InvalidInputError(f"{what}: a value is out of range for {dtype}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what}: malformed TensorProto: {exc}") from None
    return array


def encode_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, tensor_pb2.TensorProto]:
    return {name: tf.make_tensor_proto(array) for name, array in outputs.items()}
