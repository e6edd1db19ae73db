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
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop

from service.core.dtypes import Arrays
from service.core.inference import InferenceCore, ModelRef
from service.core.local_models import LocalModels
from service.core.record import RequestRecord
from service.core.routing import ModelSnapshot
from service.core.serving_config import ServingConfig
from service.errors import ClientGoneError, ModelFailureError, ServingError
from service.logs import configure_logging
from service.metrics import Metrics
from service.processes import arena, protocol
from service.processes.channel import Channel
from service.processes.orphans import die_with_parent
from service.processes.wire import (
    HANDSHAKE_SECONDS,
    receive_with_descriptor,
    send_with_descriptor,
)
from service.settings import Settings

log = logging.getLogger(__name__)

CATALOG_SECONDS = 0.2  # how often the models' state is compared with what workers last got


class _Worker:
    """One connected worker: its arena (read), ours for it (written), its calls running."""

    def __init__(
        self, host: ModelProcess, number: int, inputs: arena.Arena, answers: arena.Arena
    ) -> None:
        self.host = host
        self.channel = Channel(self._received, self._lost)
        self.number = number
        self.inputs = inputs
        self.answers = arena.Writer(answers)
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.sent: collections.deque[tuple[int, list[int]]] = collections.deque()
        self.answered = 0

    def _received(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Predict):
            self._start(message.call, self.host.predict(self, message))
        elif isinstance(message, protocol.Cancel):
            if (task := self.calls.get(message.call)) is not None:
                task.cancel()
        elif isinstance(message, protocol.Command):
            self._start(message.call, self.host.command(self, message))

    def _start(self, call: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.calls[call] = task
        task.add_done_callback(lambda _: self.calls.pop(call, None))

    def _lost(self, exc: Exception | None) -> None:
        self.host.left(self)
        for task in self.calls.values():
            task.cancel()

    def answer(self, call: int, outputs: Arrays, batch_size: int | None) -> None:
        """Sends `outputs` in our arena, first taking back the blocks of the answers the
        worker has acknowledged reading."""
        acknowledged = self.answers.arena.acknowledged
        while self.sent and self.sent[0][0] <= acknowledged:
            self.answers.free(self.sent.popleft()[1])
        self.answered += 1
        refs, blocks = self.answers.put(outputs)
        self.sent.append((self.answered, blocks))
        self.channel.send(protocol.Answer(call, self.answered, tuple(refs), batch_size))


class ModelProcess:
    def __init__(self, settings: Settings, serving_config: ServingConfig, socket_path: Path):
        self.settings = settings
        self.metrics = Metrics(requests=False)  # the workers count requests
        self.models = LocalModels(settings, serving_config, self.metrics)
        self.socket_path = socket_path
        self._workers: set[_Worker] = set()
        self._catalog: tuple[ModelSnapshot, ...] = ()

    async def run(self, stop: asyncio.Event) -> None:
        await self.models.start()
        self.core = InferenceCore(self.models.repository)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))  # in the supervisor's private (0700) folder
        listener.listen(64)
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._accept_forever, args=(listener, loop), name="accept", daemon=True
        ).start()
        watcher = asyncio.create_task(self._watch_catalog())
        log.info("model process listening on %s", self.socket_path)
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            listener.close()
            for worker in list(self._workers):
                worker.channel.close()
            await self.models.stop()
            self.socket_path.unlink(missing_ok=True)

    def _accept_forever(self, listener: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Handshakes (blocking: file descriptors travel beside the messages, which asyncio's
        transports cannot receive), then hands each connection to the event loop."""
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # closed: the process is stopping
                return
            try:
                sock.settimeout(HANDSHAKE_SECONDS)
                hello, fd = receive_with_descriptor(sock)
                if not isinstance(hello, protocol.Hello):
                    raise ConnectionError(f"expected Hello, got {type(hello).__name__}")
                inputs = arena.Arena(fd)
                inputs.close_fd()  # mapped: the descriptor is no longer needed
                answers = arena.Arena.create(self.settings.arena_bytes)
                send_with_descriptor(sock, protocol.Welcome(), answers.fd)
                answers.close_fd()
                sock.setblocking(False)
            except (OSError, ValueError) as error:
                log.warning("a worker's handshake failed: %s", error)
                sock.close()
                continue
            worker = _Worker(self, hello.worker, inputs, answers)
            asyncio.run_coroutine_threadsafe(self._adopt(worker, sock), loop)

    async def _adopt(self, worker: _Worker, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: worker.channel, sock=sock)
        self._workers.add(worker)
        worker.channel.send(protocol.Catalog(self.models.repository.snapshot()))
        log.info("worker %d connected", worker.number)

    def left(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.discard(worker)
            log.info("worker %d disconnected", worker.number)

    async def _watch_catalog(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_SECONDS)
            self._publish()

    def _publish(self) -> None:
        catalog = self.models.repository.snapshot()
        if catalog != self._catalog:
            self._catalog = catalog
            for worker in self._workers:
                worker.channel.send(protocol.Catalog(catalog))

    async def predict(self, worker: _Worker, message: protocol.Predict) -> None:
        try:
            record = RequestRecord(message.request_id, client_pause=message.client_pause)
            ref = ModelRef(message.model, message.version)
            # checked by the worker: only admitted (and the version held) here, then batched
            async with self.core.admit(ref, record) as call:
                inputs = arena.read(worker.inputs, message.inputs, copy=False)
                deadline = asyncio.get_running_loop().time() + message.seconds_left
                batcher = call.servable.batcher(message.signature)
                outputs = await batcher.submit(inputs, deadline, message.outputs, record)
            worker.answer(message.call, outputs, record.batch_size)
        except ServingError as error:
            worker.channel.send(protocol.Failure.of(message.call, error))
        except asyncio.CancelledError:  # the worker frees the inputs once told
            worker.channel.send(
                protocol.Failure.of(message.call, ClientGoneError("cancelled by the client"))
            )
        except Exception:
            log.exception("model call of %s failed", message.model)
            failure = ModelFailureError(f"model {message.model!r} failed on this request")
            worker.channel.send(protocol.Failure.of(message.call, failure))

    async def command(self, worker: _Worker, message: protocol.Command) -> None:
        repository = self.models.repository
        try:
            value: bytes | None = None
            if message.name == "rescan":
                await repository.rescan(settled=True)
            elif message.name == "unload":
                await repository.unload_model(message.argument)
            elif message.name == "load":
                await repository.load_model(message.argument)
            elif message.name == "metrics":
                value = self.metrics.exposition()
            elif message.name == "refresh":
                pass  # the catalog sent below is the answer
            else:
                raise ValueError(f"unknown command {message.name!r}")
            self._publish()  # the worker's mirror is current when the reply arrives
            worker.channel.send(protocol.Reply(message.call, value))
        except ServingError as error:
            worker.channel.send(
                protocol.Reply(message.call, failure=protocol.Failure.of(message.call, error))
            )
        except Exception:  # a bug: the worker's caller gets a 500, not an endless wait
            log.exception("command %s failed", message.name)
            failure = protocol.Failure(message.call, "ServingError", f"{message.name} failed")
            worker.channel.send(protocol.Reply(message.call, failure=failure))


def run(settings: Settings, serving_config: ServingConfig, socket_path: Path, parent: int) -> None:
    """The model process's main: serves until SIGTERM or SIGINT (or its parent's death)."""
    die_with_parent(parent)

    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ModelProcess(settings, serving_config, socket_path).run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())  # as uvicorn runs the workers' loops
