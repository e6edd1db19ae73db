"""A front-end worker's side of the model process: one connection (reconnected when the model
process restarts), and a mirror of its models built from the catalogs it sends. The mirror
stands where the repository stands in a single process, so the inference core, the routes
and the gRPC services are the same code in both shapes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.core import routing
from service.core.batching import check_request_rows
from service.core.dtypes import Arrays
from service.core.record import RequestRecord
from service.core.routing import ExportNote, ModelSnapshot, ModelView, VersionSnapshot
from service.errors import UnavailableError
from service.processes import arena, protocol
from service.processes.channel import Channel
from service.processes.wire import (
    HANDSHAKE_SECONDS,
    receive_with_descriptor,
    send_with_descriptor,
)

log = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0)  # backoff while the model process (re)starts
DRAIN_POLL_SECONDS = 0.02
MODEL_PROCESS_DOWN = "the model process is not running (restarting); retry shortly"


@dataclass(eq=False)
class _Connection:
    channel: Channel
    inputs: arena.Writer  # our arena: the tensors we send
    answers: arena.Arena  # the model process's arena for us
    calls: dict[int, tuple[asyncio.Future[Any], list[int]]] = field(default_factory=dict)

    def settle(self, call: int, result: Any = None, error: BaseException | None = None) -> None:
        future, blocks = self.calls.pop(call, (None, []))
        self.inputs.free(blocks)  # the model process is done with them
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class ModelProcessLink:
    """What a worker's `ModelServer` holds instead of `LocalModels`."""

    def __init__(
        self,
        socket_path: Path,
        worker: int,
        arena_bytes: int,
        peers_ready: Callable[[], bool] = lambda: True,
        on_connected: Callable[[bool], None] = lambda connected: None,
        busy_peers: Callable[[], list[int]] = list,
    ) -> None:
        """`peers_ready`: whether every worker is connected (readiness needs all of them);
        `on_connected`: told when this one connects and disconnects; `busy_peers`: marks this
        worker idle after a SIGTERM and says which workers are still draining."""
        self.socket_path = socket_path
        self.worker = worker
        self.arena_bytes = arena_bytes
        self.repository = RepositoryMirror(self, peers_ready)
        self._connection: _Connection | None = None
        self._numbers = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._was_connected = False
        self._on_connected = on_connected
        self._busy_peers = busy_peers

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="model-process-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _connect_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_once()
            except (OSError, asyncio.IncompleteReadError) as error:
                if self._was_connected:
                    log.warning("lost the model process (%s): reconnecting", error)
                    self._was_connected, attempt = False, 0
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            attempt += 1

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[Exception | None] = loop.create_future()
        sock, inputs, answers = await asyncio.to_thread(self._handshake)
        connection = _Connection(
            Channel(
                lambda message: self._received(connection, message),
                lambda exc: _settle_once(lost, exc),
            ),
            arena.Writer(inputs),
            answers,
        )
        try:
            await loop.create_unix_connection(lambda: connection.channel, sock=sock)
            self._connection = connection
            self._was_connected = True
            self._on_connected(True)
            log.info("worker %d connected to the model process", self.worker)
            error = await lost
            raise ConnectionResetError(str(error or "the model process closed the connection"))
        finally:
            self._connection = None
            self._on_connected(False)
            self.repository.disconnected()
            for call in list(connection.calls):
                connection.settle(call, error=UnavailableError(MODEL_PROCESS_DOWN))
            connection.channel.close()

    def _handshake(self) -> tuple[socket.socket, arena.Arena, arena.Arena]:
        """Connects and swaps arenas (blocking: the descriptors travel beside the messages)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HANDSHAKE_SECONDS)
            sock.connect(str(self.socket_path))
            inputs = arena.Arena.create(self.arena_bytes)
            send_with_descriptor(sock, protocol.Hello(self.worker), inputs.fd)
            inputs.close_fd()
            welcome, fd = receive_with_descriptor(sock)
            if not isinstance(welcome, protocol.Welcome):
                raise ConnectionError(f"expected Welcome, got {type(welcome).__name__}")
            answers = arena.Arena(fd)
            answers.close_fd()
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock, inputs, answers

    def _received(self, connection: _Connection, message: protocol.Message) -> None:
        if isinstance(message, protocol.Answer):
            outputs = arena.read(connection.answers, message.outputs, copy=True)
            connection.answers.acknowledge(message.number)  # its blocks may be reused now
            connection.settle(message.call, (outputs, message.batch_size))
        elif isinstance(message, protocol.Failure):
            connection.settle(message.call, error=message.error())
        elif isinstance(message, protocol.Reply):
            error = message.failure.error() if message.failure is not None else None
            connection.settle(message.call, message.value, error)
        elif isinstance(message, protocol.Catalog):
            self.repository.update(message.models)

    def _connected(self) -> _Connection:
        if self._connection is None:
            raise UnavailableError(MODEL_PROCESS_DOWN)
        return self._connection

    async def peers_drained(self, deadline: float) -> None:
        while busy := self._busy_peers():
            if time.monotonic() >= deadline:
                log.warning("drain time is up with worker(s) %s still draining", busy)
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    async def predict(
        self,
        version: VersionSnapshot,
        signature: str,
        inputs: Arrays,
        seconds_left: float,
        outputs: Sequence[str],
        record: RequestRecord,
    ) -> Arrays:
        connection = self._connected()
        refs, blocks = connection.inputs.put(inputs)
        call, future = self._register(connection, blocks)
        connection.channel.send(
            protocol.Predict(
                call,
                version.model,
                version.version,
                signature,
                tuple(refs),
                tuple(outputs),
                seconds_left,
                record.request_id,
                record.client_pause,
            )
        )
        try:
            answer: tuple[Arrays, int | None] = await future
        except asyncio.CancelledError:  # the client left: the inputs stay ours until told
            connection.channel.send(protocol.Cancel(call))
            raise
        results, record.batch_size = answer
        return results

    async def command(self, name: str, argument: str = "") -> Any:
        connection = self._connected()
        call, future = self._register(connection, [])
        connection.channel.send(protocol.Command(call, name, argument))
        return await future

    def _register(
        self, connection: _Connection, blocks: list[int]
    ) -> tuple[int, asyncio.Future[Any]]:
        """A new call's number and the future its answer settles (freeing `blocks` then)."""
        call = next(self._numbers)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.calls[call] = (future, blocks)
        return call, future


@dataclass(eq=False)
class RemoteBatcher:
    """A model version's batcher as a worker sees it: the rows check is local, the queue (and
    its bound, one for the whole server) is the model process's."""

    link: ModelProcessLink
    version: VersionSnapshot
    signature_name: str

    def check_rows(self, rows: int) -> None:
        config = self.version.config.batching
        if config.enabled:
            name = f"{self.version.model}/{self.version.version}"
            check_request_rows(name, config, rows)

    def check_capacity(self) -> None:
        """Nothing to check here: the model process refuses (429) what its queue cannot take."""

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        deadline: float,
        outputs: Sequence[str] = (),
        record: RequestRecord | None = None,
    ) -> Arrays:
        seconds_left = deadline - asyncio.get_running_loop().time()
        return await self.link.predict(
            self.version,
            self.signature_name,
            inputs,
            seconds_left,
            outputs,
            record or RequestRecord(""),
        )


class RepositoryMirror:
    """The model process's models as of its last catalog: routing is local (no round trip per
    request); admin changes are sent to the model process."""

    def __init__(self, link: ModelProcessLink, peers_ready: Callable[[], bool]) -> None:
        self._link = link
        self._peers_ready = peers_ready
        self._models: dict[str, ModelSnapshot] = {}
        self.connected = False
        self.on_catalog: Callable[[list[str]], None] = lambda models: None

    def update(self, models: tuple[ModelSnapshot, ...]) -> None:
        for model in models:
            for version in model.versions.values():
                version.batcher_factory = self._batcher
        self._models = {model.name: model for model in models}
        self.connected = True
        self.on_catalog(list(self._models))

    def disconnected(self) -> None:
        self.connected = False

    def _batcher(self, version: VersionSnapshot, signature: str) -> RemoteBatcher:
        return RemoteBatcher(self._link, version, signature)

    def _entries(self) -> dict[str, ModelSnapshot]:
        if not self.connected:
            raise UnavailableError(MODEL_PROCESS_DOWN)
        return self._models

    def model_names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[ModelView]:
        return [model.view() for model in self._models.values()]

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[VersionSnapshot]:
        return routing.statuses(self._entries(), model, version, label)

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> VersionSnapshot:
        return routing.resolve(self._entries(), model, version, label)

    def readiness(self) -> dict[str, bool]:
        return (
            routing.readiness(self._models)
            if self.connected
            else dict.fromkeys(self._models, False)
        )

    def is_ready(self) -> bool:
        return self.connected and self._peers_ready() and routing.is_ready(self._models)

    def export_notes(self) -> dict[str, ExportNote]:
        return routing.export_notes(self._models)

    async def rescan(self, *, settled: bool = False) -> None:
        await self._link.command("rescan")

    async def unload_model(self, name: str) -> ModelView:
        routing.find(self._entries(), name)  # 404 here
        await self._link.command("unload", name)
        return self._models[name].view()

    async def load_model(self, name: str) -> ModelView:
        routing.find(self._entries(), name)
        await self._link.command("load", name)
        return self._models[name].view()

    async def refresh(self) -> None:
        """The model process answers once it has sent its current catalog (every version's
        counters), which arrives first."""
        await self._link.command("refresh")

    async def metrics(self) -> bytes:
        """The model process's metrics (its batchers, versions and process)."""
        exposition: bytes = await self._link.command("metrics")
        return exposition


def _settle_once(future: asyncio.Future[Exception | None], exc: Exception | None) -> None:
    if not future.done():
        future.set_result(exc)
