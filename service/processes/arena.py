"""Tensors between processes without pickled copies: each side owns one shared-memory arena
per connection and writes the tensors it sends into it; the message carries only where they
are (`TensorRef`). An arena is a ring: blocks are taken at its head and given back in any
order, its tail moving past the ones given back. A tensor that finds no room travels inside
the message instead (slower, never refused)."""

from __future__ import annotations

import collections
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from service.core.dtypes import Arrays

ALIGN = 64  # cache-line aligned blocks: numpy views on them are aligned for every dtype
HEADER_BYTES = ALIGN  # the first line holds the reader's acknowledgement counter
STRING_LENGTH = struct.Struct("<I")  # before each string's bytes


class Arena:
    """A shared-memory region: an anonymous file (memfd, not bound by /dev/shm's size) made by
    its writer, whose descriptor travels to the reader over the Unix socket (SCM_RIGHTS)."""

    def __init__(self, fd: int, size: int | None = None) -> None:
        """Maps `fd`, first sized to `size` bytes when given (sparse: pages exist once
        written). The caller closes `fd` once it has been sent (the mapping stays)."""
        if size is not None:
            os.ftruncate(fd, size)
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.memory = mmap.mmap(fd, self.size)
        self.buffer = memoryview(self.memory)
        self._counter = self.buffer[:8].cast("Q")

    @classmethod
    def create(cls, size: int) -> Arena:
        return cls(os.memfd_create("modelserve-arena", os.MFD_CLOEXEC), size)

    def close_fd(self) -> None:
        os.close(self.fd)

    @property
    def acknowledged(self) -> int:
        """The highest message number the reader is done with (written by the reader)."""
        return int(self._counter[0])

    def acknowledge(self, number: int) -> None:
        self._counter[0] = number


@dataclass(frozen=True, slots=True)
class TensorRef:
    """One tensor of a message: its bytes at `offset` in the sender's arena, or `inline`.
    Strings (numpy object arrays of bytes) travel as 4-byte little-endian lengths followed by
    the bytes, as in the Open Inference Protocol's binary extension."""

    name: str
    dtype: str  # numpy dtype string; "object" for strings
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    inline: bytes | None = None


class Ring:
    """The allocator of the writer's side of an arena: first free space after the head."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.head = start
        self._blocks: collections.deque[list[int]] = collections.deque()  # [offset, end, freed]
        self._by_offset: dict[int, list[int]] = {}

    def allocate(self, nbytes: int) -> int | None:
        size = -(-max(nbytes, 1) // ALIGN) * ALIGN
        if not self._blocks:
            offset: int | None = self.start if self.start + size <= self.end else None
        elif self._blocks[-1][0] >= self._blocks[0][0]:  # in order: free after head, before tail
            tail = self._blocks[0][0]
            if self.head + size <= self.end:
                offset = self.head
            elif self.start + size <= tail:
                offset = self.start
            else:
                offset = None
        else:  # wrapped: free from head to the oldest block
            offset = self.head if self.head + size <= self._blocks[0][0] else None
        if offset is None:
            return None
        block = [offset, offset + size, 0]
        self._blocks.append(block)
        self._by_offset[offset] = block
        self.head = offset + size
        return offset

    def free(self, offset: int) -> None:
        self._by_offset.pop(offset)[2] = 1
        while self._blocks and self._blocks[0][2]:
            self._blocks.popleft()

    @property
    def used(self) -> int:
        return len(self._blocks)


class Writer:
    """Writes tensors into its arena (the sending side's)."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.ring = Ring(HEADER_BYTES, arena.size)

    def put(self, arrays: Arrays) -> tuple[list[TensorRef], list[int]]:
        """The arrays as references, and the blocks they took (to `free` once read)."""
        refs, blocks = [], []
        for name, array in arrays.items():
            items = [_as_bytes(item) for item in array.flat] if array.dtype == object else None
            nbytes = (
                array.nbytes
                if items is None
                else sum(map(len, items)) + STRING_LENGTH.size * len(items)
            )
            dtype = array.dtype.str if items is None else "object"
            offset = self.ring.allocate(nbytes)
            if offset is None:  # no room now: in the message itself
                inline = bytearray(nbytes)
                _write(memoryview(inline), array, items)
                refs.append(TensorRef(name, dtype, array.shape, -1, nbytes, bytes(inline)))
                continue
            _write(self.arena.buffer[offset : offset + nbytes], array, items)
            refs.append(TensorRef(name, dtype, array.shape, offset, nbytes))
            blocks.append(offset)
        return refs, blocks

    def free(self, blocks: list[int]) -> None:
        for offset in blocks:
            self.ring.free(offset)


def read(arena: Arena, refs: list[TensorRef] | tuple[TensorRef, ...], *, copy: bool) -> Arrays:
    """The tensors `refs` describe in the peer's arena: views (valid until the peer frees the
    blocks) or, with `copy`, arrays of their own."""
    arrays = {}
    for ref in refs:
        data = (
            memoryview(ref.inline)
            if ref.inline is not None
            else (arena.buffer[ref.offset : ref.offset + ref.nbytes])
        )
        if ref.dtype == "object":
            arrays[ref.name] = _strings_array(data, ref.shape)
        else:
            array = np.frombuffer(data, np.dtype(ref.dtype)).reshape(ref.shape)
            arrays[ref.name] = array.copy() if copy and ref.inline is None else array
    return arrays


def _write(target: memoryview, array: np.ndarray, items: list[bytes] | None) -> None:
    """`array` into `target`, written in place (a string tensor's 1 MB photo is copied once,
    not joined first: the extra copy's freed heap made glibc give the pages back each time)."""
    if items is None:
        np.copyto(np.frombuffer(target, array.dtype).reshape(array.shape), array)
        return
    position = 0
    for item in items:
        STRING_LENGTH.pack_into(target, position, len(item))
        position += STRING_LENGTH.size
        target[position : position + len(item)] = item
        position += len(item)


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    raise TypeError(f"a string tensor holds a {type(item).__name__}, not bytes")


def _strings_array(data: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Each string copied out of `data` once (no copy of the whole tensor first)."""
    count = int(np.prod(shape)) if shape else 1
    items = np.empty(count, dtype=object)
    position = 0
    for index in range(count):
        (length,) = STRING_LENGTH.unpack_from(data, position)
        position += STRING_LENGTH.size
        items[index] = bytes(data[position : position + length])
        position += length
    return items.reshape(shape)
