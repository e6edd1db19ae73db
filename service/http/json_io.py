"""JSON in and out: orjson for bodies (large ones in pieces, `json_pieces`) and numpy arrays;
the stdlib `json` only for the `NaN`/`Infinity` tokens orjson refuses and TF Serving allows.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import ml_dtypes
import numpy as np
import orjson
from starlette.responses import JSONResponse, Response

from service.core.decoding import release
from service.core.tensors import encode_strings
from service.errors import InvalidInputError
from service.http import json_pieces

T = TypeVar("T")

_NON_FINITE_TOKENS = (b"NaN", b"Infinity")
_C_SCANNER_MAX_BYTES = 256 * 1024  # ~20 ms of the stdlib's C scanner


class JSONBody(JSONResponse):
    """application/json rendered by orjson (numpy arrays included). A JSONResponse, so that
    OpenAPI documents the routes' answers as JSON (their models), not as strings."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


BodySplit = Callable[[bytes], tuple[bytes, "memoryview | None"]]


@dataclass(frozen=True)
class JSONDocument:
    data: Any
    booleans_possible: bool  # the text holds a `true` or `false` token (maybe inside a string)
    binary: memoryview | None = None  # the body's bytes after the JSON (V2 binary tensors)


def _contains(body: bytes, token: bytes, window: int = 1024 * 1024) -> bool:
    """`token in body`, a window at a time: one search of 60 MB holds the GIL for 0.1 s."""
    if len(body) <= window:
        return token in body
    return any(
        body.find(token, start, start + window + len(token) - 1) >= 0
        for start in range(0, len(body), window)
    )


def with_document(
    body: bytes,
    use: Callable[[JSONDocument], T],
    *,
    allow_non_finite: bool = False,
    split: BodySplit | None = None,
) -> T:
    """`use(document)`, then the document emptied piece by piece (it may hold millions of
    objects; see service.core.decoding.release). What `use` returns must not share its lists.
    `split` cuts the body into its JSON and the binary data after it."""
    body, binary = split(body) if split else (body, None)
    data = parse_json(body, allow_non_finite=allow_non_finite)
    booleans = _contains(body, b"true") or _contains(body, b"false")
    document = JSONDocument(data, booleans_possible=booleans, binary=binary)
    try:
        return use(document)
    finally:
        if len(body) > json_pieces.PIECE_BYTES:  # smaller ones are freed at once in no time
            release(document.data)


def parse_json(body: bytes, *, allow_non_finite: bool = False) -> Any:
    if not body:
        raise InvalidInputError("request body is empty; expected a JSON object")
    try:
        return json_pieces.loads(body)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        if allow_non_finite and any(token in body for token in _NON_FINITE_TOKENS):
            try:
                return _stdlib_loads(body)
            except (ValueError, RecursionError):
                pass
        raise InvalidInputError(f"malformed JSON body: {exc}") from None


def _stdlib_loads(body: bytes) -> Any:
    """The stdlib parser, for NaN/Infinity. Its C scanner holds the GIL for a whole document
    (5 s for 60 MB), so beyond a small size the pure-Python scanner, slower but interruptible,
    keeps the event loop's thread running."""
    if len(body) <= _C_SCANNER_MAX_BYTES:
        return json.loads(body)
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(body.decode("utf-8"))


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
