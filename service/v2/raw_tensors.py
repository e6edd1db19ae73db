"""Tensors as raw bytes, the form the Open Inference Protocol's binary tensor data extension
(REST) and its gRPC `raw_input_contents` / `raw_output_contents` share: elements little-endian,
row-major, without padding; a BOOL is one byte (0 or 1); a BYTES element is a 4-byte
little-endian length and the bytes."""

from __future__ import annotations

import math
import struct
import sys

import numpy as np

from service.core.decoding import object_array
from service.core.dtypes import DType
from service.errors import InvalidInputError

_LENGTH = struct.Struct("<I")


def decode(
    raw: memoryview | bytes,
    dtype: DType,
    shape: list[int],
    what: str,
    size_name: str = "binary_data_size",
) -> np.ndarray:
    """One input's raw data as an array of `dtype` and `shape`; `size_name` is what the client
    calls the data's length (in errors)."""
    count = math.prod(shape)
    if dtype.is_string:
        return object_array(_split_strings(raw, count, what, size_name)).reshape(shape)
    itemsize = dtype.numpy.itemsize
    if len(raw) != count * itemsize:
        raise InvalidInputError(
            f"{what}: shape {shape} of {dtype.v2_name} takes {count * itemsize} bytes, but "
            f"{size_name} is {len(raw)}"
        )
    if dtype.is_bool:
        flags = np.frombuffer(raw, dtype=np.uint8)
        if flags.size and flags.max() > 1:
            raise InvalidInputError(f"{what}: a BOOL element must be the byte 0 or 1")
        return flags.astype(bool).reshape(shape)
    return _native(np.frombuffer(raw, dtype=dtype.numpy)).reshape(shape)


def _native(array: np.ndarray) -> np.ndarray:
    """The wire is little-endian; so is every host this runs on but a big-endian one."""
    return array.byteswap() if sys.byteorder == "big" else array


def _split_strings(raw: memoryview | bytes, count: int, what: str, size_name: str) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInputError(f"{what}: BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInputError(
                f"{what}: a BYTES element of {length} bytes goes past its {size_name}"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInputError(
            f"{what}: the shape holds {count} elements but the BYTES data has {len(elements)}"
        )
    return elements


def encode(array: np.ndarray) -> bytes:
    """An output's binary data: little-endian, row-major; strings length-prefixed."""
    if array.dtype == object or array.dtype.kind in "SU":
        parts = []
        for element in array.reshape(-1).tolist():
            data = element.encode("utf-8") if isinstance(element, str) else bytes(element)
            parts.append(_LENGTH.pack(len(data)) + data)
        return b"".join(parts)
    if array.dtype == bool:
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return _native(np.ascontiguousarray(array)).tobytes()
