"""The messages of `service.processes.protocol` on the socket: a 4-byte little-endian length,
then the message in MessagePack, an array of its kind and its fields in declaration order.
Plain data only (numbers, text, bytes, lists, maps): decoding builds nothing but the message
classes, unlike a pickle. The handshake's two messages carry a file descriptor beside them."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from tensorflow.core.protobuf import meta_graph_pb2

from service.core.routing import ExportNote, ModelSnapshot, VersionSnapshot
from service.core.servable import VersionState
from service.core.serving_config import ModelConfig
from service.core.signatures import Signature, signatures_from_defs
from service.processes import protocol as p
from service.processes.arena import TensorRef

Fields = list[Any]
LENGTH = struct.Struct("<I")
HANDSHAKE_SECONDS = 10.0  # either side waits this long for the other's first message


def pack(message: p.Message) -> bytes:
    kind = _KINDS[type(message)]
    packed: bytes = msgpack.packb([kind, *_ENCODERS[kind](message)], use_bin_type=True)
    return packed


def unpack(data: bytes | memoryview) -> p.Message:
    try:
        kind, *fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return _DECODERS[kind](fields)
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as error:
        raise ValueError(f"malformed message between processes: {error!r}") from error


def _ref(ref: TensorRef) -> Fields:
    return [ref.name, ref.dtype, list(ref.shape), ref.offset, ref.nbytes, ref.inline]


def _ref_of(fields: Fields) -> TensorRef:
    name, dtype, shape, offset, nbytes, inline = fields
    return TensorRef(name, dtype, tuple(shape), offset, nbytes, inline)


def _failure(failure: p.Failure | None) -> Fields | None:
    return None if failure is None else [failure.call, failure.kind, failure.message]


def _failure_of(fields: Fields | None) -> p.Failure | None:
    return None if fields is None else p.Failure(*fields)


def _model(model: ModelSnapshot) -> Fields:
    return [
        model.name,
        model.config.model_dump(mode="json"),
        [_version(version) for version in model.versions.values()],
        list(model.serving_versions),
        model.load_failures,
        list(model.versions_found),
        model.ignored_folders,
        model.unloaded_by_admin,
        model.unavailable_reason,
        _note(model.export_note),
    ]


def _note(note: ExportNote | None) -> Fields | None:
    return None if note is None else [note.coming, note.stage, note.detail]


def _note_of(fields: Fields | None) -> ExportNote | None:
    return None if fields is None else ExportNote(*fields)


def _model_of(fields: Fields) -> ModelSnapshot:
    name, config, versions, serving, failures, found, ignored, unloaded, reason, note = fields
    model_config = ModelConfig.model_validate(config)
    known = [_version_of(version, model_config) for version in versions]
    return ModelSnapshot(
        name,
        model_config,
        {version.version: version for version in known},
        tuple(serving),
        failures,
        tuple(found),
        ignored,
        unloaded,
        reason,
        _note_of(note),
    )


def _version(version: VersionSnapshot) -> Fields:
    definitions = {
        name: signature.definition.SerializeToString()
        for name, signature in version.signatures.items()
    }
    return [
        version.version,
        str(version.path),
        version.state.value,
        version.error_code,
        version.error_message,
        list(version.fingerprint),
        version.load_seconds,
        version.warmup_seconds,
        definitions,
        version.details,
    ]


def _version_of(fields: Fields, config: ModelConfig) -> VersionSnapshot:
    number, path, state, code, message, fingerprint, load, warmup, definitions, details = fields
    signatures: dict[str, Signature] = signatures_from_defs(
        {name: meta_graph_pb2.SignatureDef.FromString(raw) for name, raw in definitions.items()}
    )
    return VersionSnapshot(
        config.name,
        number,
        Path(path),
        config,
        VersionState(state),
        code,
        message,
        tuple(fingerprint),
        load,
        warmup,
        signatures,
        details,
    )


_ENCODERS: dict[int, Callable[[Any], Fields]] = {
    0: lambda m: [m.worker],
    1: lambda m: [],
    2: lambda m: [
        m.call,
        m.model,
        m.version,
        m.signature,
        [_ref(r) for r in m.inputs],
        list(m.outputs),
        m.seconds_left,
        m.request_id,
        m.client_pause,
    ],
    3: lambda m: [m.call],
    4: lambda m: [m.call, m.number, [_ref(r) for r in m.outputs], m.batch_size],
    5: lambda m: [m.call, m.kind, m.message],
    6: lambda m: [m.call, m.name, m.argument],
    7: lambda m: [m.call, m.value, _failure(m.failure)],
    8: lambda m: [[_model(model) for model in m.models]],
}
_DECODERS: dict[int, Callable[[Fields], p.Message]] = {
    0: lambda f: p.Hello(*f),
    1: lambda f: p.Welcome(),
    2: lambda f: p.Predict(
        f[0], f[1], f[2], f[3], tuple(_ref_of(r) for r in f[4]), tuple(f[5]), f[6], f[7], f[8]
    ),
    3: lambda f: p.Cancel(*f),
    4: lambda f: p.Answer(f[0], f[1], tuple(_ref_of(r) for r in f[2]), f[3]),
    5: lambda f: p.Failure(*f),
    6: lambda f: p.Command(*f),
    7: lambda f: p.Reply(f[0], f[1], _failure_of(f[2])),
    8: lambda f: p.Catalog(tuple(_model_of(model) for model in f[0])),
}
_KINDS: dict[type, int] = {
    p.Hello: 0,
    p.Welcome: 1,
    p.Predict: 2,
    p.Cancel: 3,
    p.Answer: 4,
    p.Failure: 5,
    p.Command: 6,
    p.Reply: 7,
    p.Catalog: 8,
}


def send_with_descriptor(sock: socket.socket, message: p.Hello | p.Welcome, fd: int) -> None:
    """The handshake's message, and an arena's file descriptor beside it (SCM_RIGHTS)."""
    socket.send_fds(sock, [encode(message)], [fd])


def receive_with_descriptor(sock: socket.socket) -> tuple[p.Message, int]:
    """The handshake's message and the descriptor sent with it; reads no byte past it, so
    what follows is left for the channel."""
    # the descriptor comes with the first bytes it was sent with
    head, fds, _, _ = socket.recv_fds(sock, LENGTH.size, 1)
    if not fds:
        raise ConnectionError("the handshake came without its shared memory")
    head += _exactly(sock, LENGTH.size - len(head))
    (length,) = LENGTH.unpack(head)
    return unpack(_exactly(sock, length)), fds[0]


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection during the handshake")
        data += chunk
    return data


def encode(message: p.Message) -> bytes:
    payload = pack(message)
    return LENGTH.pack(len(payload)) + payload


def decode(payload: bytes | memoryview) -> p.Message:
    """ValueError for anything but a message of this protocol."""
    return unpack(payload)
