"""The model process: the one process that imports TensorFlow. It holds the models
(`LocalModels`: devices, repository, batchers) and serves the front-end workers over a Unix
socket (`service.processes.protocol`): their requests join the same batchers, so batches
form from every worker's requests together."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core.dtypes import Arrays
from service.core.local_models import LocalModels
from service.core.record import RequestRecord
from service.core.routing import ModelSnapshot
from service.core.serving_config import ServingConfig
from service.errors import ClientGoneError, ModelFailureError, ServingError
from service.metrics import Metrics
from service.processes import arena
from service.processes.protocol import (
    Answer,
    Cancel,
    Catalog,
    Command,
    Failure,
    Hello,
    Message,
    Predict,
    Reply,
    Welcome,
    encode,
    receive,
)
from service.settings import Settings

log = logging.getLogger(__name__)

CATALOG_SECONDS = 0.2  # how often the models' state is compared with what workers last got


@dataclass(eq=False)
class _Worker:
    """One connected worker: its arena (read), ours for it (written), its calls running."""

    number: int
    writer: asyncio.StreamWriter
    inputs: arena.Arena
    answers: arena.Writer
    calls: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    sent: collections.deque[tuple[int, list[int]]] = field(default_factory=collections.deque)
    answered: int = 0

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    def answer(self, call: int, outputs: Arrays, batch_size: int | None) -> None:
        """Sends `outputs` in our arena, first taking back the blocks of the answers the
        worker has acknowledged reading."""
        acknowledged = self.answers.arena.acknowledged
        while self.sent and self.sent[0][0] <= acknowledged:
            self.answers.free(self.sent.popleft()[1])
        self.answered += 1
        refs, blocks = self.answers.put(outputs)
        self.sent.append((self.answered, blocks))
        self.send(Answer(call, self.answered, tuple(refs), batch_size))


class ModelProcess:
    def __init__(self, settings: Settings, serving_config: ServingConfig, socket_path: Path):
        self.settings = settings
        self.metrics = Metrics()
        self.models = LocalModels(settings, serving_config, self.metrics)
        self.socket_path = socket_path
        self._workers: set[_Worker] = set()
        self._catalog: tuple[ModelSnapshot, ...] = ()

    async def run(self, stop: asyncio.Event) -> None:
        await self.models.start()
        self.socket_path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        watcher = asyncio.create_task(self._watch_catalog())
        log.info("model process listening on %s", self.socket_path)
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            server.close()
            for worker in list(self._workers):
                worker.writer.close()
            await self.models.stop()
            self.socket_path.unlink(missing_ok=True)

    def _catalog_message(self) -> Catalog:
        return Catalog(self.models.repository.snapshot())

    async def _watch_catalog(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_SECONDS)
            self._publish()

    def _publish(self) -> None:
        catalog = self.models.repository.snapshot()
        if catalog != self._catalog:
            self._catalog = catalog
            for worker in self._workers:
                worker.send(Catalog(catalog))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await receive(reader)
        if not isinstance(hello, Hello):
            writer.close()
            return
        answers = arena.Arena(self.settings.arena_bytes)
        worker = _Worker(hello.worker, writer, arena.Arena(0, hello.arena), arena.Writer(answers))
        worker.send(Welcome(answers.name))
        worker.send(Catalog(self.models.repository.snapshot()))
        self._workers.add(worker)
        log.info("worker %d connected", worker.number)
        try:
            while True:
                message = await receive(reader)
                if isinstance(message, Predict):
                    self._start(worker, message.call, self._predict(worker, message))
                elif isinstance(message, Cancel):
                    if (task := worker.calls.get(message.call)) is not None:
                        task.cancel()
                elif isinstance(message, Command):
                    self._start(worker, message.call, self._command(worker, message))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("worker %d disconnected", worker.number)
        finally:
            self._workers.discard(worker)
            for task in worker.calls.values():
                task.cancel()
            writer.close()
            answers.unlink()
            worker.inputs.close()

    def _start(self, worker: _Worker, call: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        worker.calls[call] = task
        task.add_done_callback(lambda _: worker.calls.pop(call, None))

    async def _predict(self, worker: _Worker, message: Predict) -> None:
        try:
            servable = self.models.repository.resolve(message.model, message.version)
            inputs = arena.read(worker.inputs, message.inputs, copy=False)
            record = RequestRecord(message.request_id)
            deadline = asyncio.get_running_loop().time() + message.seconds_left
            servable.enter()
            try:
                batcher = servable.batcher(message.signature)
                outputs = await batcher.submit(inputs, deadline, message.outputs, record)
            finally:
                servable.leave()
            worker.answer(message.call, outputs, record.batch_size)
        except ServingError as error:
            worker.send(Failure.of(message.call, error))
        except asyncio.CancelledError:  # the worker frees the inputs once told
            worker.send(Failure.of(message.call, ClientGoneError("cancelled by the client")))
        except Exception:
            log.exception("model call of %s failed", message.model)
            failure = ModelFailureError(f"model {message.model!r} failed on this request")
            worker.send(Failure.of(message.call, failure))

    async def _command(self, worker: _Worker, message: Command) -> None:
        repository = self.models.repository
        try:
            value: object = None
            if message.name == "rescan":
                await repository.rescan(settled=True)
            elif message.name == "unload":
                await repository.unload_model(message.argument)
            elif message.name == "load":
                await repository.load_model(message.argument)
            elif message.name == "metrics":
                value = self.metrics.exposition()
            else:
                raise ValueError(f"unknown command {message.name!r}")
            self._publish()  # the worker's mirror is current when the reply arrives
            worker.send(Reply(message.call, value))
        except ServingError as error:
            worker.send(Reply(message.call, failure=Failure.of(message.call, error)))


def run(settings: Settings, serving_config: ServingConfig, socket_path: Path) -> None:
    """The model process's main: serves until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ModelProcess(settings, serving_config, socket_path).run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
