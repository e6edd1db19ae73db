"""One model version: its state, signatures, instances and a batcher per signature. It counts
the requests holding it, so a version being unloaded finishes what it accepted first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from service.core.batching import Batcher, BatchObserver, InstancePool, Runner
from service.core.serving_config import ModelConfig
from service.core.signatures import DEFAULT_SIGNATURE, Signature, named_signature
from service.errors import UnavailableError


class VersionState(StrEnum):
    """TF Serving's ModelVersionStatus.State names."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass
class ServableVersion:
    model: str
    version: int
    path: Path
    config: ModelConfig
    state: VersionState = VersionState.START
    error_code: str = "OK"  # canonical code of the load failure, "OK" otherwise
    error_message: str = ""
    fingerprint: tuple[int, ...] = ()  # of the files at the last load attempt
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    signatures: dict[str, Signature] = field(default_factory=dict)
    in_flight: int = 0
    _pool: InstancePool | None = None
    _executor: Executor | None = None
    _observer: BatchObserver | None = None
    _batchers: dict[str, Batcher] = field(default_factory=dict)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def attach(
        self,
        instances: Sequence[Runner],
        signatures: dict[str, Signature],
        executor: Executor,
        observer: BatchObserver | None = None,
    ) -> None:
        """Makes the loaded instances servable (called on the event loop)."""
        self.signatures = signatures
        self._pool = InstancePool(instances)
        self._executor = executor
        self._observer = observer

    def signature(self, name: str) -> Signature:
        return named_signature(self.signatures, name, self.model, self.version)

    def batcher(self, signature_name: str = DEFAULT_SIGNATURE) -> Batcher:
        if self._pool is None or self._executor is None:
            raise UnavailableError(f"model {self.model} version {self.version} is not loaded")
        if signature_name not in self._batchers:
            self.signature(signature_name)  # 400 for an unknown signature
            self._batchers[signature_name] = Batcher(
                f"{self.model}/{self.version}",
                signature_name,
                self.config.batching,
                self._pool,
                self._executor,
                self._observer,
            )
        return self._batchers[signature_name]

    def batchers(self) -> list[Batcher]:  # one per signature called so far
        return list(self._batchers.values())

    def batches_in_flight(self) -> int:
        return sum(self._pool.busy) if self._pool else 0

    def devices(self) -> list[str]:  # by instance index
        return [runner.device for runner in self._pool.runners] if self._pool else []

    def check_capacity(self) -> None:
        """429 at once when the default signature's queue is full, before a body is parsed."""
        batcher = self._batchers.get(DEFAULT_SIGNATURE)
        if batcher is not None:
            batcher.check_capacity()

    async def close(self) -> None:
        """Stops the batchers and drops the instances (TensorFlow frees them)."""
        for batcher in self._batchers.values():
            await batcher.stop()
        self._batchers.clear()
        self._pool = None

    def serving_details(self) -> dict[str, Any]:
        """Placement and batching counters, shown in model status (a modelserve extension)."""
        if (pool := self._pool) is None:
            return {}
        return {
            "instances": [
                {"instance": i, "device": runner.device, "batches": pool.batches_run[i]}
                for i, runner in enumerate(pool.runners)
            ],
            "batching": {
                name: {
                    "enabled": batcher.config.enabled,
                    "queued": batcher.queued,
                    **batcher.stats.as_json(),
                }
                for name, batcher in self._batchers.items()
            },
        }

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self) -> None:  # once no request is using this version
        await self._idle.wait()
