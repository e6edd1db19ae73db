"""The Open Inference Protocol's binary tensor data extension (as Triton and KServe define it).

A request may carry tensors as raw bytes after its JSON: the `Inference-Header-Content-Length`
header says how many bytes of the body are JSON, and each binary input says how many of the
bytes after it are its own (`parameters.binary_data_size`), in input order. Elements are
little-endian, row-major, without padding; a BOOL is one byte (0 or 1); a BYTES element is a
4-byte little-endian length and the bytes (service.v2.raw_tensors). Answers put the outputs the
client asked for as binary (`parameters.binary_data` per output, or `binary_data_output` for all)
after the JSON the same way.
"""

from __future__ import annotations

from service.errors import InvalidInputError

HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    """(the JSON part, the binary part or None) of a request body."""
    if header_length is None:
        return body, None
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInputError(
            f"{HEADER} must be the JSON header's length in bytes, got {header_length!r}"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInputError(
            f"{HEADER} is {length}, but the body has {len(body)} bytes: the JSON header must "
            "be a non-empty part of the body"
        )
    return body[:length], memoryview(body)[length:]


class BinaryInputs:
    """Hands each binary input its bytes, in input order; `finish` checks none are left."""

    def __init__(self, data: memoryview | None) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: object, what: str) -> memoryview:
        if self._data is None:
            raise InvalidInputError(
                f"{what}: parameters.binary_data_size needs the {HEADER} header (the length "
                "of the JSON part of the body)"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(
                f"{what}: parameters.binary_data_size must be a non-negative integer, got {size!r}"
            )
        end = self._offset + size
        if end > len(self._data):
            raise InvalidInputError(
                f"{what}: binary_data_size {size} goes past the end of the body: "
                f"{len(self._data) - self._offset} bytes of binary data are left for it"
            )
        piece = self._data[self._offset : end]
        self._offset = end
        return piece

    def finish(self) -> None:
        if self._data is not None and self._offset != len(self._data):
            raise InvalidInputError(
                f"the body has {len(self._data)} bytes after the JSON header, but the inputs' "
                f"binary_data_size add up to {self._offset}"
            )
