"""Large gRPC requests are parsed in a helper process (protobuf only, no TensorFlow), which
hands them back without their bulk plus the bulk in pieces of `CHUNK_ITEMS` strings (Predict:
each input's `string_val`; Classify/Regress: the serialized examples and their context), so the
server turns them into arrays between `checkpoint`s: parsing a 64 MiB PredictRequest of 32 M
empty strings is one 0.5 s call holding the GIL. The helper also refuses what is never valid
and costly to parse twice. Bytes cross in shared memory; without room, the server parses."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pool, message, message_factory
from google.protobuf.descriptor import FileDescriptor

from service.core.decoding import CHUNK_ITEMS, checkpoint
from service.errors import InvalidInputError, UnavailableError
from service.processes.orphans import die_with_parent

log = logging.getLogger(__name__)

INLINE_BYTES = 1024 * 1024  # at most ~512 K entries: ~10 ms of parsing
COPY_CHUNK_BYTES = 4 * 1024 * 1024  # copied into shared memory per GIL-holding call (~1 ms)
SHARED_MEMORY = Path("/dev/shm")  # where Linux keeps POSIX shared memory
SHARED_MEMORY_SPARE_BYTES = 16 * 1024 * 1024  # left for others (and for races between calls)
# for the helper to end when asked at close, before it is killed. A started helper ended in
# 0.10-0.14 s on a 2-core machine, one asked while still starting in 0.5 s; the bound leaves
# room for a busy machine
HELPER_EXIT_SECONDS = 5.0
MAX_INPUTS = 1024  # named inputs of one request, and names in output_filter
MAX_DIMS = 254  # TensorFlow's own limit on a tensor's rank
UNSERVED_VALUE_FIELDS = ("variant_val", "resource_handle_val")  # no served dtype uses them

PREDICT = "tensorflow.serving.PredictRequest"
CLASSIFY = "tensorflow.serving.ClassificationRequest"
REGRESS = "tensorflow.serving.RegressionRequest"
EXAMPLES = "examples"  # the key of a Classify/Regress request's examples in `Split.strings`


# strings joined in one buffer, and the length of each (in the smallest unsigned dtype)
Piece = tuple[bytes, np.ndarray]


@dataclass(frozen=True)
class Strings:
    """Byte strings in pieces, each string preceded by `prefix` (a Classify context)."""

    pieces: Sequence[Piece]
    prefix: bytes = b""

    def __len__(self) -> int:
        return sum(len(lengths) for _, lengths in self.pieces)

    def array(self) -> np.ndarray:
        """A 1-D object array of the strings, one piece between checkpoints."""
        strings = np.empty(len(self), dtype=object)
        start = 0
        for buffer, lengths in self.pieces:
            checkpoint()
            ends = np.cumsum(lengths, dtype=np.int64)
            begins = (ends - lengths).tolist()
            strings[start : start + len(lengths)] = [
                self.prefix + buffer[begin:end]
                for begin, end in zip(begins, ends.tolist(), strict=True)
            ]
            start += len(lengths)
        return strings


@dataclass(frozen=True)
class Split:
    """A message without its bulk, and the bulk: by input name (Predict), or under EXAMPLES."""

    rest: bytes
    strings: dict[str, Strings] = field(default_factory=dict)


@dataclass(frozen=True)
class _Layout:
    """Where the helper wrote a Split in shared memory (what crosses the pipe): the rest
    first, then each piece as its buffer followed by its lengths."""

    outbox: str
    rest_size: int
    prefixes: dict[str, bytes]
    pieces: tuple[tuple[str, int, int, int, str], ...]  # key, offset, buffer size, count, dtype


class MessageSplitter:
    """The helper process, one per server. Bytes cross in shared memory, copied in chunks
    between checkpoints: pickled through the pipe, 32 M strings held the GIL for 620 ms."""

    def __init__(self) -> None:
        self._files = _file_protos(_message_file(name) for name in (PREDICT, CLASSIFY, REGRESS))
        self._lock = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),  # no copy of TensorFlow's threads
            initializer=_start_helper,
            initargs=(self._files, os.getpid()),
        )
        executor.submit(len, b"")  # starts the helper now, not at the first large call
        return executor

    def split(self, message_name: str, raw: bytes) -> Split | None:
        """`raw` parsed in the helper (blocks: call from a decode-pool thread); None when
        shared memory has no room for it. A dead helper (OOM) is replaced, the call refused."""
        if not _shared_memory_fits(2 * len(raw)):
            return None
        executor = self._executor
        inbox = SharedMemory(create=True, size=max(len(raw), 1))
        try:
            _copy_in_chunks(memoryview(raw), _view(inbox))
            layout: _Layout = executor.submit(_split, message_name, inbox.name, len(raw)).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    log.error("the message parsing helper process ended; starting a new one")
                    self._executor = self._start()
            raise UnavailableError(
                "the server could not parse this request (its parsing process ended, most "
                "likely out of memory); retry, or send smaller requests"
            ) from None
        finally:
            inbox.close()
            inbox.unlink()
        outbox = SharedMemory(name=layout.outbox)
        try:
            return _read(_view(outbox), layout)
        finally:
            outbox.close()
            outbox.unlink()

    def close(self, wait_seconds: float = HELPER_EXIT_SECONDS) -> None:
        """Asks the helper to end, and kills it if it has not within `wait_seconds`: at exit
        the interpreter waits for its child processes with no bound, and a worker held by a
        helper that did not end (seen on a slow machine) outlived the drain time."""
        helpers = list(self._executor._processes.values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        # the executor's thread reaps the helper: its sentinel (readable once it has ended) is
        # watched here instead of a second join, which would race that thread for the exit
        for helper in helpers:
            if not multiprocessing.connection.wait([helper.sentinel], wait_seconds):
                log.warning("the message parsing helper did not end when asked: killing it")
                helper.kill()


def _shared_memory_fits(size: int) -> bool:
    """Writing past what /dev/shm holds kills the process (SIGBUS); containers get 64 MB
    unless given more (see k8s/base)."""
    if not SHARED_MEMORY.is_dir():
        return True  # not Linux: shared memory is not a size-limited file system
    free = shutil.disk_usage(SHARED_MEMORY).free
    if free >= size + SHARED_MEMORY_SPARE_BYTES:
        return True
    if not _warned_small_shared_memory.is_set():
        _warned_small_shared_memory.set()
        log.warning(
            "%s has %d MB free, too little to hand a %d MB gRPC message to the parsing "
            "helper: such messages are parsed in the server process, where they pause the "
            "event loop; give the container more shared memory (k8s/base mounts 1 GiB)",
            SHARED_MEMORY,
            free // 2**20,
            size // 2**20,
        )
    return False


_warned_small_shared_memory = threading.Event()


def _view(memory: SharedMemory) -> memoryview:
    view = memory.buf
    assert view is not None  # None only once closed
    return view


def _copy_in_chunks(source: memoryview, target: memoryview) -> None:
    for start in range(0, len(source), COPY_CHUNK_BYTES):
        checkpoint()
        end = min(start + COPY_CHUNK_BYTES, len(source))
        target[start:end] = source[start:end]


def _read(outbox: memoryview, layout: _Layout) -> Split:
    rest = bytes(outbox[: layout.rest_size])
    pieces: dict[str, list[Piece]] = {key: [] for key in layout.prefixes}
    for key, offset, size, count, dtype in layout.pieces:
        checkpoint()
        buffer = bytes(outbox[offset : offset + size])
        lengths = np.frombuffer(outbox, dtype, count, offset + size).copy()
        pieces[key].append((buffer, lengths))
    strings = {key: Strings(pieces[key], prefix) for key, prefix in layout.prefixes.items()}
    return Split(rest, strings)


def check_predict(request: Any) -> None:
    """The same limits for every message size: inputs, output names, dimensions, dtypes."""
    if len(request.inputs) > MAX_INPUTS or len(request.output_filter) > MAX_INPUTS:
        raise InvalidInputError(
            f"the request names {len(request.inputs)} inputs and {len(request.output_filter)} "
            f"outputs; at most {MAX_INPUTS} of each are accepted"
        )
    for name, tensor in request.inputs.items():
        if len(tensor.tensor_shape.dim) > MAX_DIMS:
            raise InvalidInputError(
                f"input {name!r}: a shape of {len(tensor.tensor_shape.dim)} dimensions; "
                f"tensors have at most {MAX_DIMS}"
            )
        for unserved in UNSERVED_VALUE_FIELDS:
            if len(getattr(tensor, unserved)):
                raise InvalidInputError(
                    f"input {name!r}: {unserved} is not accepted (no model takes it)"
                )


def _message_file(name: str) -> FileDescriptor:
    return descriptor_pool.Default().FindMessageTypeByName(name).file


def _file_protos(files: Iterable[FileDescriptor]) -> list[bytes]:
    """The serialized files, each after those it imports."""
    ordered: dict[str, bytes] = {}

    def visit(file: FileDescriptor) -> None:
        if file.name in ordered:
            return
        for dependency in file.dependencies:
            visit(dependency)
        ordered[file.name] = file.serialized_pb

    for file in files:
        visit(file)
    return list(ordered.values())


# --- in the helper process ---

_classes: dict[str, Any] = {}


def _start_helper(files: list[bytes], parent: int) -> None:
    die_with_parent(parent)  # a server killed outright leaves no helper behind
    _load_classes(files)


def _load_classes(files: list[bytes]) -> None:
    pool = descriptor_pool.DescriptorPool()
    for serialized in files:
        pool.AddSerializedFile(serialized)
    for name in (PREDICT, CLASSIFY, REGRESS):
        _classes[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def _split(message_name: str, inbox_name: str, size: int) -> _Layout:
    inbox = SharedMemory(name=inbox_name)
    try:
        raw = bytes(_view(inbox)[:size])
    finally:
        inbox.close()
    kind = _classes[message_name]
    try:
        request = kind.FromString(raw)
    except message.DecodeError as exc:
        raise InvalidInputError(f"the request is not a valid {kind.__name__}: {exc}") from None
    del raw
    request.DiscardUnknownFields()  # ignored by the server; each would be parsed again
    split = _split_inputs if message_name == PREDICT else _split_examples
    strings = split(request)  # first: it takes the bulk out of the request
    return _write(request.SerializeToString(), strings)


def _write(rest: bytes, strings: dict[str, Strings]) -> _Layout:
    pieces = [(key, piece) for key, values in strings.items() for piece in values.pieces]
    total = len(rest) + sum(len(buffer) + lengths.nbytes for _, (buffer, lengths) in pieces)
    outbox = SharedMemory(create=True, size=max(total, 1))
    try:
        view = _view(outbox)
        view[: len(rest)] = rest
        offset, layout = len(rest), []
        for key, (buffer, lengths) in pieces:
            view[offset : offset + len(buffer)] = buffer
            lengths_at = offset + len(buffer)
            view[lengths_at : lengths_at + lengths.nbytes] = lengths.tobytes()
            layout.append((key, offset, len(buffer), len(lengths), lengths.dtype.str))
            offset = lengths_at + lengths.nbytes
    finally:
        outbox.close()
    prefixes = {key: values.prefix for key, values in strings.items()}
    return _Layout(outbox.name, len(rest), prefixes, tuple(layout))


def _split_inputs(request: Any) -> dict[str, Strings]:
    check_predict(request)
    strings = {}
    for name, tensor in request.inputs.items():
        if len(tensor.string_val) > CHUNK_ITEMS:
            strings[name] = _pieces(tensor.string_val)
            tensor.ClearField("string_val")
    return strings


def _split_examples(request: Any) -> dict[str, Strings]:
    container = request.input
    kind = container.WhichOneof("kind")
    if kind == "example_list":
        examples, context = container.example_list.examples, b""
    elif kind == "example_list_with_context":
        examples = container.example_list_with_context.examples
        context = container.example_list_with_context.context.SerializeToString()
    else:  # the server says what is missing
        return {}
    # the server prepends the context once it has admitted as many examples
    serialized = [example.SerializeToString() for example in examples]
    container.ClearField(kind)
    return {EXAMPLES: _pieces(serialized, context)}


def _pieces(values: Sequence[bytes], prefix: bytes = b"") -> Strings:
    pieces = []
    for start in range(0, len(values), CHUNK_ITEMS):
        chunk = values[start : start + CHUNK_ITEMS]
        lengths = np.fromiter(map(len, chunk), np.uint64, len(chunk))
        smallest = np.min_scalar_type(int(lengths.max(initial=0)))
        pieces.append((b"".join(chunk), lengths.astype(smallest)))
    return Strings(pieces, prefix)
