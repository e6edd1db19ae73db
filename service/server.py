"""The composition root: `ModelServer` builds every part of a running modelserve and starts
and stops them in order. Its REST app (`server.app`) exists at once; `async with
server.running()` is what the app's lifespan does. Nothing is module-level."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.auth import AccessPolicy
from service.core.decoding import Decoder
from service.core.inference import InferenceCore
from service.core.serving_config import ServingConfig, serving_config_for
from service.errors import UnavailableError
from service.grpc.message_split import MessageSplitter
from service.grpc.server import GrpcDrain, GrpcSecurity, start_grpc_server
from service.http.app import create_app
from service.http.lifecycle import Lifecycle
from service.metrics import Metrics
from service.processes.link import ModelProcessLink, RepositoryMirror

if TYPE_CHECKING:
    from service.core.local_models import LocalModels
    from service.core.repository import ModelRepository
from service.settings import Settings
from service.tasks.image_decoding import ImageDecoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    repository: ModelRepository | RepositoryMirror
    core: InferenceCore
    body_decoder: Decoder
    image_decoder: ImageDecoder
    splitter: MessageSplitter
    grpc_drain: GrpcDrain
    grpc_port: int


class ModelServer:
    def __init__(
        self,
        settings: Settings,
        serving_config: ServingConfig | None = None,
        metrics: Metrics | None = None,
        *,
        models: ModelProcessLink | None = None,
    ) -> None:
        """The models are in this process, or in the model process `models` links to (a
        front-end worker, `service.processes.worker`)."""
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.access = AccessPolicy.from_settings(settings)  # the keys file: REST and gRPC
        self.lifecycle = Lifecycle()
        self.models: LocalModels | ModelProcessLink
        if models is None:
            from service.core.local_models import LocalModels  # TensorFlow: not in a worker

            config = serving_config or serving_config_for(settings)
            self.models = LocalModels(settings, config, self.metrics)
        else:
            self.models = models
        self._parts: Parts | None = None
        self.app = create_app(self)

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the server is not running")
        return self._parts

    @property
    def grpc_port(self) -> int:
        """The gRPC port it listens on (a free one when the settings say 0)."""
        return self.parts.grpc_port

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self._start()
        try:
            yield
        finally:
            await self._stop()

    async def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: with workers, theirs and the model
        process's, one family each."""
        own = self.metrics.exposition()
        if isinstance(self.models, ModelProcessLink):
            try:
                return own + await self.models.repository.metrics()
            except UnavailableError:  # restarting: the workers' own are still worth a scrape
                return own
        return own

    async def peers_drained(self, deadline: float) -> None:
        """Once this server is idle after a SIGTERM: until the other workers are too (or the
        drain time is up); at once for a single process."""
        if isinstance(self.models, ModelProcessLink):
            await self.models.peers_drained(deadline)

    def begin_drain(self) -> None:
        """REST and gRPC stop taking requests and finish theirs (both in one drain time)."""
        self.lifecycle.draining = True
        if self._parts is not None:
            self._parts.grpc_drain.begin()

    async def _start(self) -> None:
        settings, metrics = self.settings, self.metrics
        if isinstance(self.models, ModelProcessLink):
            self.models.repository.on_catalog = metrics.count_rejections
        await self.models.start()
        repository = self.models.repository
        image_decoder = ImageDecoder(settings.image_decode_threads, settings.decode_pixel_budget)
        metrics.watch_image_decoder(image_decoder)
        core = InferenceCore(repository)
        decoder = Decoder(
            settings.decode_threads, settings.decode_memory_bytes, settings.decode_inline_bytes
        )
        splitter = MessageSplitter()
        grpc_drain, grpc_port = await start_grpc_server(
            core,
            metrics,
            decoder,
            splitter,
            host=settings.host,
            port=settings.grpc_port,
            max_message_bytes=settings.grpc_max_message_bytes,
            drain_seconds=settings.drain_seconds,
            security=GrpcSecurity.from_settings(settings, self.access.keys),
            max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        # What start-up made (modules, the app, the servers) lives as long as the process: a
        # full collection need not walk it (in a worker it doubled the cost of a request).
        gc.freeze()
        self._parts = Parts(
            repository, core, decoder, image_decoder, splitter, grpc_drain, grpc_port
        )

    async def _stop(self) -> None:
        parts = self.parts
        await parts.grpc_drain.finish()
        await self.models.stop()
        parts.body_decoder.close()
        parts.splitter.close()
        parts.image_decoder.close()
