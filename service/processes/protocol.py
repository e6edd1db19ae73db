"""The messages between a front-end worker and the model process, over one Unix socket per
worker: each is a 4-byte little-endian length and a pickled message below (small: tensors stay
in the shared-memory arenas, `service.processes.arena`). Both sides only unpickle what the
other, started by the same server, wrote.

worker -> model process: `Hello` once (with its arena's descriptor), then `Predict`, `Cancel`
and `Command` (admin, metrics);
model process -> worker: `Welcome` once (with its arena's), then `Answer` or `Failure` exactly
once per `Predict` (a cancelled one too: then the worker frees its input blocks), `Reply` per
`Command`, and a `Catalog` whenever the models' state changes (and at once after `Welcome`)."""

from __future__ import annotations

import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

from service.core.routing import ModelSnapshot
from service.errors import ServingError
from service.processes.arena import TensorRef

LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Hello:
    """With it, the descriptor of the worker's arena (its requests' tensors)."""

    worker: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """With it, the descriptor of the model process's arena for this worker (answers)."""


@dataclass(frozen=True, slots=True)
class Predict:
    call: int  # the worker's number for this call
    model: str
    version: int
    signature: str
    inputs: tuple[TensorRef, ...]
    outputs: tuple[str, ...]  # wanted (all when empty)
    seconds_left: float  # to the request's deadline
    request_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    call: int  # the client left: the model process drops the call if it has not run yet


@dataclass(frozen=True, slots=True)
class Answer:
    call: int
    number: int  # of this answer: the worker acknowledges it in the arena once read
    outputs: tuple[TensorRef, ...]
    batch_size: int | None


@dataclass(frozen=True, slots=True)
class Failure:
    call: int
    kind: str  # the ServingError subclass
    message: str

    @classmethod
    def of(cls, call: int, error: ServingError) -> Failure:
        return cls(call, type(error).__name__, error.message)

    def error(self) -> ServingError:
        return _ERROR_CLASSES.get(self.kind, ServingError)(self.message)


@dataclass(frozen=True, slots=True)
class Command:
    call: int
    name: str  # one of service.processes.model_process.COMMANDS
    argument: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    call: int
    value: Any = None
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    models: tuple[ModelSnapshot, ...]


Message = Hello | Welcome | Predict | Cancel | Answer | Failure | Command | Reply | Catalog


def _subclasses(cls: type[ServingError]) -> list[type[ServingError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


_ERROR_CLASSES = {cls.__name__: cls for cls in _subclasses(ServingError)}


def send_with_descriptor(sock: socket.socket, message: Hello | Welcome, fd: int) -> None:
    """The handshake's message, and an arena's file descriptor beside it (SCM_RIGHTS)."""
    socket.send_fds(sock, [encode(message)], [fd])


def receive_with_descriptor(sock: socket.socket) -> tuple[Message, int]:
    """The handshake's message and the descriptor sent with it; reads no byte past it, so
    what follows is left for the channel."""
    # the descriptor comes with the first bytes it was sent with
    head, fds, _, _ = socket.recv_fds(sock, LENGTH.size, 1)
    if not fds:
        raise ConnectionError("the handshake came without its shared memory")
    head += _exactly(sock, LENGTH.size - len(head))
    (length,) = LENGTH.unpack(head)
    message: Message = pickle.loads(_exactly(sock, length))
    return message, fds[0]


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection during the handshake")
        data += chunk
    return data


def encode(message: Message) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(payload)) + payload
