"""The messages between a front-end worker and the model process, over one Unix socket per
worker (framed in `service.processes.wire`; small: tensors stay in the shared-memory arenas,
`service.processes.arena`).

worker -> model process: `Hello` once (with its arena's descriptor), then `Predict`, `Cancel`
and `Command` (admin, metrics);
model process -> worker: `Welcome` once (with its arena's), then `Answer` or `Failure` exactly
once per `Predict` (a cancelled one too: then the worker frees its input blocks), `Reply` per
`Command`, and a `Catalog` whenever the models' state changes (and at once after `Welcome`)."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.routing import ModelSnapshot
from service.errors import ServingError
from service.processes.arena import TensorRef


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
    client_pause: float | None  # RequestRecord.client_pause (what refill learns from)


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
    name: str  # rescan, unload, load, metrics, refresh (ModelProcess.command)
    argument: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    call: int
    value: bytes | str | None = None
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    models: tuple[ModelSnapshot, ...]


Message = Hello | Welcome | Predict | Cancel | Answer | Failure | Command | Reply | Catalog


def _subclasses(cls: type[ServingError]) -> list[type[ServingError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


_ERROR_CLASSES = {cls.__name__: cls for cls in _subclasses(ServingError)}
