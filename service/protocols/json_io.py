"""Fast JSON in and out: orjson for bodies, numpy arrays serialized without `.tolist()`.

A 784-float `digits` body or a 150k-float image body is parsed by orjson (C) and turned into
numpy once per request; outputs are written straight from numpy by orjson. The stdlib `json`
module is only a fallback for what orjson refuses by design: the `NaN`/`Infinity` tokens that
TF Serving's REST API allows, in both directions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import orjson
from fastapi import Request
from starlette.responses import JSONResponse, Response

from service.errors import InvalidInputError
from service.protocols.body import read_body
from service.tensors import encode_strings

_NON_FINITE_TOKENS = (b"NaN", b"Infinity")


class JSONBody(JSONResponse):
    """application/json rendered by orjson (numpy arrays included). A JSONResponse, so that
    OpenAPI documents the routes' answers as JSON (their models), not as strings."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class JSONDocument:
    data: Any
    booleans_possible: bool  # the text holds a `true` or `false` token (maybe inside a string)


async def read_json(
    request: Request, *, max_bytes: int, allow_non_finite: bool = False
) -> JSONDocument:
    """The request body parsed as JSON; 413 beyond `max_bytes`, 400 with the parser's message
    when it is not JSON."""
    body = await read_body(request, max_bytes)
    data = parse_json(body, allow_non_finite=allow_non_finite)
    return JSONDocument(data, booleans_possible=b"true" in body or b"false" in body)


def parse_json(body: bytes, *, allow_non_finite: bool = False) -> Any:
    if not body:
        raise InvalidInputError("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if allow_non_finite and any(token in body for token in _NON_FINITE_TOKENS):
            try:
                return json.loads(body)
            except (ValueError, RecursionError):
                pass
        raise InvalidInputError(f"malformed JSON body: {exc}") from None


def json_array(array: np.ndarray, *, binary: bool = False) -> Any:
    """An output tensor in a form `respond` can serialize: numeric arrays as they are,
    strings as text (or {"b64"} when `binary` or not UTF-8)."""
    if array.dtype == object or array.dtype.kind in "SU":
        return encode_strings(array, as_b64=binary)
    if array.dtype == ml_dtypes.bfloat16:
        array = array.astype(np.float32)
    if array.ndim == 0:  # a scalar output is a bare JSON number, not a list
        return array.item()
    return np.ascontiguousarray(array)


def respond(
    payload: Any, outputs: Iterable[np.ndarray] = (), *, status_code: int = 200
) -> Response:
    """A JSON response; when an output holds NaN or infinities (which orjson would write as
    null, silently), the stdlib writes them as NaN/Infinity tokens the way TF Serving does."""
    if all(_finite(array) for array in outputs):
        return JSONBody(payload, status_code=status_code)
    text = json.dumps(payload, default=_to_list, allow_nan=True)
    return Response(text, status_code=status_code, media_type="application/json")


def _finite(array: np.ndarray) -> bool:
    if array.dtype == ml_dtypes.bfloat16:
        array = array.astype(np.float32)
    return array.dtype.kind != "f" or bool(np.isfinite(array).all())


def _to_list(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind == "f" and value.dtype.itemsize < 8:
            # through numpy's shortest text, so float32 0.1 is written 0.1, as orjson does
            value = value.astype(str).astype(np.float64)
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")
