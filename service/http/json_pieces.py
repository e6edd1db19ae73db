"""Parsing a large JSON document in pieces: orjson holds the GIL for a whole flat list of numbers
(0.3-2 s for 60 MB). numpy finds the structure, orjson parses pieces of `PIECE_BYTES`; what orjson
refuses stays refused (unbalanced brackets, `[1,,2]`, a trailing comma)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.core.decoding import checkpoint

PIECE_BYTES = 256 * 1024  # a few ms of orjson
SCAN_BYTES = 1024 * 1024  # a few ms of numpy
MAX_DEPTH = 1024  # orjson's own limit
MAX_SPLIT_LEVEL = 72  # deeper containers are parsed whole (a tensor has at most 64 dimensions)
_WHITESPACE = b" \t\r\n"
_QUOTE, _BACKSLASH, _COMMA, _COLON = (ord(c) for c in '"\\,:')


class _MalformedError(ValueError):
    """Malformed structure, found before orjson saw the piece."""


def loads(body: bytes) -> Any:
    """`orjson.loads(body)`, in pieces when large; a ValueError when it is not JSON."""
    if len(body) <= PIECE_BYTES:
        return orjson.loads(body)
    return _Document(body).value(0, len(body))


class _Document:
    def __init__(self, body: bytes) -> None:
        self.body = body
        text = np.frombuffer(body, dtype=np.uint8)
        self.depth = np.empty(len(text), dtype=np.int32)
        self.commas = np.empty(len(text), dtype=bool)
        self.colons = np.empty(len(text), dtype=bool)
        scan = _Scan(escapes=_BACKSLASH in text)
        for start in range(0, len(text), SCAN_BYTES):  # numpy's scans keep the GIL: in blocks
            checkpoint()
            end = start + SCAN_BYTES
            scan.block(text[start:end], self.depth[start:end], self.commas[start:end])
            self.colons[start:end] = self.commas[start:end] & (text[start:end] == _COLON)
            self.commas[start:end] &= text[start:end] == _COMMA
        if scan.depth != 0:
            raise _MalformedError("malformed JSON: brackets do not balance")
        self._found: dict[tuple[int, int], np.ndarray] = {}

    def value(self, start: int, end: int) -> Any:
        start, end = self._strip(start, end)
        if end - start <= PIECE_BYTES or self.body[start] not in b"[{":
            return orjson.loads(self.body[start:end])
        level = int(self.depth[start])
        if level > MAX_SPLIT_LEVEL:  # no tensor nests this deep: not worth a scan per level
            return orjson.loads(self.body[start:end])
        closing = b"]" if self.body[start] == ord("[") else b"}"
        if self.body[end - 1 : end] != closing:
            raise _MalformedError(f"malformed JSON at byte {start}: a container does not close")
        separators = self._positions(self.commas, level)
        first, last = np.searchsorted(separators, [start + 1, end - 1])
        bounds = np.concatenate(([start + 1], separators[first:last], [end - 1]))
        if closing == b"]":
            return self._array(bounds)
        return self._object(bounds, level)

    def _positions(self, marks: np.ndarray, level: int) -> np.ndarray:
        """Where `marks` (commas or colons) are at `level`, found once per level for the whole
        document, so that nested containers cost no scan each."""
        key = (id(marks), level)
        if key not in self._found:
            parts = [np.zeros(0, dtype=np.int64)]
            for low in range(0, len(marks), SCAN_BYTES):  # in blocks: the GIL changes hands
                checkpoint()
                high = low + SCAN_BYTES
                parts.append(
                    low + np.flatnonzero(marks[low:high] & (self.depth[low:high] == level))
                )
            self._found[key] = np.concatenate(parts)
        return self._found[key]

    def _array(self, bounds: np.ndarray) -> list[Any]:
        """Elements between `bounds` (separator positions, the brackets first and last)."""
        items: list[Any] = []
        first, final = 0, len(bounds) - 1
        while first < final:
            checkpoint()
            start = int(bounds[first]) + (first > 0)
            # elements first..last-1 fit in a piece (at least one element)
            fitting = int(np.searchsorted(bounds, bounds[first] + PIECE_BYTES, "right")) - 1
            last = min(max(fitting, first + 1), final)
            if last == first + 1 and bounds[last] - bounds[first] > PIECE_BYTES:
                items.append(self.value(start, int(bounds[last])))
            else:
                parsed = orjson.loads(b"[" + self.body[start : int(bounds[last])] + b"]")
                if len(parsed) != last - first:
                    raise _MalformedError(f"malformed JSON near byte {start}: empty element")
                items.extend(parsed)
            first = last
        return items

    def _object(self, bounds: np.ndarray, level: int) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for index in range(len(bounds) - 1):
            start, end = int(bounds[index]) + (index > 0), int(bounds[index + 1])
            colons = self._positions(self.colons, level)
            index = int(np.searchsorted(colons, start))
            if index == len(colons) or colons[index] >= end:
                raise _MalformedError(f"malformed JSON near byte {start}: a member without ':'")
            colon = int(colons[index])
            key = orjson.loads(self.body[start:colon])
            if not isinstance(key, str):
                raise _MalformedError(f"malformed JSON near byte {start}: a key is not a string")
            members[key] = self.value(colon + 1, end)
        return members

    def _strip(self, start: int, end: int) -> tuple[int, int]:
        while start < end and self.body[start] in _WHITESPACE:
            start += 1
        while end > start and self.body[end - 1] in _WHITESPACE:
            end -= 1
        return start, end


class _Scan:
    """Where strings and containers are, one block after another (state carried across)."""

    def __init__(self, *, escapes: bool) -> None:
        self.escapes = escapes  # any backslash at all: else no quote is escaped
        self.backslashes = 0  # backslashes ending the previous block
        self.in_string = False
        self.depth = 0

    def block(self, text: np.ndarray, depth: np.ndarray, structural: np.ndarray) -> None:
        """Fills `depth` (containers open at each byte, a container's brackets counting as
        inside it) and `structural` (outside strings) for this block."""
        quotes = text == _QUOTE
        if self.escapes:
            quotes &= self._preceding_backslashes(text) % 2 == 0
        inside = np.logical_xor.accumulate(quotes) ^ self.in_string
        self.in_string = bool(inside[-1])
        np.logical_not(inside | quotes, out=structural)
        opens = structural & ((text == ord("[")) | (text == ord("{")))
        closes = structural & ((text == ord("]")) | (text == ord("}")))
        np.cumsum(opens.astype(np.int8) - closes.astype(np.int8), dtype=np.int32, out=depth)
        depth += self.depth
        if depth.min() < 0:
            raise _MalformedError("malformed JSON: a bracket closes nothing")
        if depth.max() > MAX_DEPTH:
            raise _MalformedError(f"JSON nested deeper than {MAX_DEPTH} levels")
        self.depth = int(depth[-1])
        depth[closes] += 1

    def _preceding_backslashes(self, text: np.ndarray) -> np.ndarray:
        """How many backslashes come right before each byte."""
        positions = np.arange(len(text), dtype=np.int32)
        other = np.maximum.accumulate(np.where(text == _BACKSLASH, -1, positions))
        ending_at = positions - other  # the run of backslashes ending at each byte
        ending_at[other < 0] += self.backslashes  # ... begun in the previous block
        before = np.concatenate(([self.backslashes], ending_at[:-1]))
        self.backslashes = int(ending_at[-1])
        return before
