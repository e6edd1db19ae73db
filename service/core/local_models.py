"""The models served in this process: its devices configured, a pool of inference threads and
the repository loading the models onto them. One process alone holds them; with front-end
workers, the model process does (`service.processes.model_process`)."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from service.core.auto_export import AutoExports
from service.core.placement import DeviceSetup, configure_devices
from service.core.repository import ModelRepository
from service.core.serving_config import ServingConfig
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

# The event loop and the inference threads share the GIL. At Python's 5 ms default, a thread in
# TensorFlow's Python wrapper holds the loop off for up to 5 ms between batches: at 0.5 ms,
# digits through two workers answered 5-15 % more req/s, sentiment 2-27 % (two A/B pairs each,
# benchmarks/serving.py at 64 connections).
GIL_SWITCH_SECONDS = 0.0005


class LocalModels:
    def __init__(self, settings: Settings, serving_config: ServingConfig, metrics: Metrics) -> None:
        self.settings = settings
        self.serving_config = serving_config
        self.metrics = metrics
        self._repository: ModelRepository | None = None
        self._inference: ThreadPoolExecutor | None = None
        self._exports: AutoExports | None = None

    @property
    def repository(self) -> ModelRepository:
        if self._repository is None:
            raise RuntimeError("the models are not started")
        return self._repository

    async def start(self) -> None:
        settings, metrics = self.settings, self.metrics
        device_setup = DeviceSetup(
            virtual_cpus=settings.virtual_devices,
            gpu_memory_limit_mb=settings.gpu_memory_limit_mb,
            auto_gpu_min_mb=settings.auto_gpu_min_mb,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
        devices = configure_devices(device_setup)
        if settings.echo:
            log.warning("ECHO MODE: models are not run; answers are zeros (benchmarks only)")
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self._inference = ThreadPoolExecutor(
            settings.inference_threads, thread_name_prefix="inference"
        )
        self._repository = ModelRepository(
            self.serving_config,
            poll_interval=settings.poll_interval_seconds,
            inference_executor=self._inference,
            load_threads=settings.load_threads,
            devices=devices,
            device_setup=device_setup,
            echo=settings.echo,
            batch_observer=metrics.batch_observer,
            grpc_max_message_bytes=settings.grpc_max_message_bytes,
            follow_symlinks=settings.follow_version_symlinks,
        )
        metrics.watch(self._repository)
        await self._repository.start()
        self._exports = AutoExports(settings, self.serving_config, self._repository)
        await self._exports.start()
        names = ", ".join(self._repository.model_names())
        log.info("serving %s from %s", names, self.serving_config.source)

    async def stop(self) -> None:
        if self._exports is not None:
            await self._exports.stop()
        if self._repository is not None:
            await self._repository.stop()
        if self._inference is not None:
            self._inference.shutdown(wait=True, cancel_futures=True)
