"""JSON values <-> numpy arrays for both REST protocols, numbers through `np.asarray` (never a
per-element loop), and nothing silently altered: 1.5 is not truncated into an int input, 1e39
does not become float32 infinity, `true` is not a number."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from service.core.decoding import MixedKindsError, asarray, object_array
from service.core.dtypes import DType
from service.core.signatures import TensorInfo
from service.errors import InvalidInputError

MAX_DIMENSIONS = 64  # numpy's limit on an array's rank
_TOO_DEEP = f"lists nested too deeply (a tensor has at most {MAX_DIMENSIONS} dimensions)"
_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "strings", "O": "objects or mixed types"}


def decode_tensor(
    value: Any, spec: TensorInfo, *, what: str, allow_b64: bool, booleans_possible: bool = True
) -> np.ndarray:
    """A JSON value (nested lists) as an array of `spec`'s dtype; `what` names it in errors.
    numpy turns `true` into 1 among numbers: they are searched for booleans (a Python walk)
    unless the caller knows the JSON text holds no `true`/`false` token."""
    if spec.dtype.is_string:
        return _decode_strings(value, what=what, allow_b64=allow_b64)
    array = _decode_numbers(value, spec.dtype, what=what)
    if booleans_possible and not spec.dtype.is_bool and _holds_boolean(value):
        raise InvalidInputError(f"{what}: expected numbers ({spec.dtype.tf_name}), got booleans")
    return array


def _holds_boolean(value: Any) -> bool:
    if isinstance(value, list):
        if value and not isinstance(value[0], list):
            return any(type(item) is bool for item in value)
        return any(_holds_boolean(item) for item in value)
    return type(value) is bool


def _decode_numbers(value: Any, dtype: DType, *, what: str) -> np.ndarray:
    expected = "booleans" if dtype.is_bool else "numbers"
    try:
        array = asarray(value)
    except MixedKindsError:
        raise InvalidInputError(
            f"{what}: expected {expected} ({dtype.tf_name}), got objects or mixed types"
        ) from None
    except ValueError as exc:  # numpy 2 refuses ragged nesting, and more than 64 dimensions
        if _depth(value) > MAX_DIMENSIONS:
            raise InvalidInputError(f"{what}: {_TOO_DEEP}") from None
        raise InvalidInputError(
            f"{what}: ragged nested lists (rows of different lengths): {exc}"
        ) from None
    if array.size and array.dtype.kind not in ("b" if dtype.is_bool else "iuf"):
        got = _KIND_NAMES.get(array.dtype.kind, str(array.dtype))
        raise InvalidInputError(f"{what}: expected {expected} ({dtype.tf_name}), got {got}")
    if dtype.is_bool:
        return array.astype(np.bool_)
    if dtype.is_integer:
        return _to_integers(value, array, dtype, what=what)
    with np.errstate(over="ignore"):  # overflow is detected just below, and reported
        converted = array.astype(dtype.numpy)
    if not np.isfinite(converted).all() and np.isfinite(array).all():
        raise InvalidInputError(f"{what}: a value is out of range for {dtype.tf_name}")
    return converted


def _to_integers(value: Any, array: np.ndarray, dtype: DType, *, what: str) -> np.ndarray:
    """`array` is numpy's own reading of `value`. It reads floats when the JSON held fractions
    (rejected), or integral floats like 2.0, or integers beyond int64 mixed with others, which
    float64 would round: those are converted again from the JSON numbers themselves, exactly."""
    limits = np.iinfo(dtype.numpy)
    out_of_range = InvalidInputError(
        f"{what}: a value is out of range for {dtype.tf_name} [{limits.min}, {limits.max}]"
    )
    if not array.size:
        return array.astype(dtype.numpy)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (np.mod(array, 1) != 0).any():
            raise InvalidInputError(f"{what}: expected integers ({dtype.tf_name}), got fractions")
        if array.min() < limits.min or array.max() > limits.max * 1.0001:
            raise out_of_range
        try:
            return asarray(value, dtype=dtype.numpy)
        except OverflowError:
            raise out_of_range from None
    if array.min() < limits.min or array.max() > limits.max:
        raise out_of_range
    return array.astype(dtype.numpy)


def _decode_strings(value: Any, *, what: str, allow_b64: bool) -> np.ndarray:
    flat: list[bytes] = []
    try:
        shape = _walk_strings(value, flat, what=what, allow_b64=allow_b64)
    except RecursionError:
        raise InvalidInputError(f"{what}: {_TOO_DEEP}") from None
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInputError(f"{what}: {_TOO_DEEP}")
    return object_array(flat).reshape(shape)


def _depth(value: Any) -> int:
    """How deep lists nest along the first element of each (a ragged tail may differ)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


def _walk_strings(value: Any, flat: list[bytes], *, what: str, allow_b64: bool) -> tuple[int, ...]:
    """Appends the leaves of a nested list to `flat` and returns its (regular) shape."""
    if isinstance(value, list):
        shapes = {_walk_strings(item, flat, what=what, allow_b64=allow_b64) for item in value}
        if len(shapes) > 1:
            raise InvalidInputError(f"{what}: ragged nested lists (rows of different lengths)")
        return (len(value), *(shapes.pop() if shapes else ()))
    flat.append(string_value(value, what=what, allow_b64=allow_b64))
    return ()


def string_value(value: Any, *, what: str, allow_b64: bool) -> bytes:
    """One JSON string (UTF-8) or {"b64": ...} as bytes; anything else is a 400."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
            raise InvalidInputError(f"{what}: a string is not valid Unicode") from None
    if allow_b64 and isinstance(value, dict) and set(value) == {"b64"}:
        encoded = value["b64"]
        if not isinstance(encoded, str):
            raise InvalidInputError(f"{what}: 'b64' must hold a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"{what}: 'b64' value is not valid base64") from None
    expected = 'strings or {"b64": "..."} objects' if allow_b64 else "strings"
    raise InvalidInputError(f"{what}: expected {expected}, got {type(value).__name__}")


def encode_strings(array: np.ndarray, *, as_b64: bool) -> Any:
    """A string tensor as nested JSON lists: UTF-8 text, or {"b64": ...} for binary outputs and
    for bytes that are not UTF-8 (rather than mangled)."""
    return _string_json(array.tolist(), as_b64=as_b64)


def _string_json(value: Any, *, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_string_json(item, as_b64=as_b64) for item in value]
    raw = value.encode("utf-8") if isinstance(value, str) else value  # numpy unicode arrays
    if not as_b64:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(raw).decode("ascii")}
