"""TensorProto <-> numpy for the gRPC API, converted as TensorFlow's `tf.make_ndarray` and
`tf.make_tensor_proto` do (byte for byte), in numpy alone: front-end workers have TensorFlow's
protobuf modules but not its runtime (`service.protos`). Checked first without allocating: the
input's dtype, a known non-negative shape, and exactly its element count of values (TensorFlow
would quietly repeat the last value of a short list)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from service.core.decoding import object_array
from service.core.dtypes import DTYPES
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
_HALF_TYPES = ("DT_HALF", "DT_BFLOAT16")  # half_val holds their bits (uint16), not their values
# The DataType name of each numpy dtype served; numpy's other string kinds are DT_STRING too.
_TF_NAMES = {d.numpy: d.tf_name for d in DTYPES}
_STRING_KINDS = "OSU"
# tf.make_tensor_proto writes these (of more than one element) as raw bytes in tensor_content;
# every other dtype, and tensors of 0 or 1 elements, in the typed value field.
_CONTENT_TYPES = frozenset(_TF_NAMES) - {np.dtype(np.bool_), np.dtype(np.uint16), np.dtype(object)}
_CONTENT_LIMIT = 1 << 31


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
        array = _values(proto, spec.dtype.numpy, shape)
    except OverflowError:  # int_val / half_val are int32 on the wire, wider than int8 or half
        raise InvalidInputError(f"{what}: a value is out of range for {dtype}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what}: malformed TensorProto: {exc}") from None
    return array


def _values(proto: tensor_pb2.TensorProto, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    """A checked numeric or bool TensorProto's array, as `tf.make_ndarray` reads it (an int
    out of range for a narrow dtype raises OverflowError)."""
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).copy().reshape(shape)
    name = types_pb2.DataType.Name(proto.dtype)
    field = getattr(proto, _VALUE_FIELDS[name])
    if name in _HALF_TYPES:
        return np.fromiter(field, dtype=np.uint16).view(dtype).reshape(shape)
    return np.fromiter(field, dtype=dtype).reshape(shape)


def encode_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, tensor_pb2.TensorProto]:
    return {name: encode_tensor(array) for name, array in outputs.items()}


def encode_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """The TensorProto `tf.make_tensor_proto(array)` makes, for the dtypes served."""
    if not array.dtype.isnative:  # TensorFlow would copy big-endian bytes as they are
        array = array.astype(array.dtype.newbyteorder("="))
    name = "DT_STRING" if array.dtype.kind in _STRING_KINDS else _TF_NAMES.get(array.dtype)
    if name is None:
        raise TypeError(f"Element type not supported in TensorProto: {array.dtype}")
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DataType.Value(name),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    if array.dtype in _CONTENT_TYPES and array.size > 1:
        if array.nbytes >= _CONTENT_LIMIT:
            raise ValueError("Cannot create a tensor proto whose content is larger than 2GB.")
        proto.tensor_content = array.tobytes()
    elif name == "DT_STRING":
        proto.string_val.extend([_as_bytes(value) for value in array.ravel()])
    elif name in _HALF_TYPES:
        proto.half_val.extend(array.ravel().view(np.uint16).tolist())
    else:
        getattr(proto, _VALUE_FIELDS[name]).extend(array.ravel().tolist())
    return proto


def _as_bytes(value: object) -> bytes:
    """TensorFlow's `compat.as_bytes`: text as UTF-8, bytes as they are, nothing else."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"Expected binary or unicode string, got {value!r}")
