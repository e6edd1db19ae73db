"""A model version as the protocols see it: its state, its signatures, and `predict`.

`ServableVersion.predict` is the seam the dynamic batcher plugs into: protocols call it with
validated numpy inputs and get numpy outputs back, knowing nothing of how the work is run.
Today it runs the model directly on a worker thread. It also counts requests in flight, so
a version being unloaded can finish what it accepted before it is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from service.errors import UnavailableError
from service.runtime import Arrays, LoadedModel
from service.signatures import Signature


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
    state: VersionState = VersionState.START
    error_code: str = "OK"  # canonical code of the load failure, "OK" otherwise
    error_message: str = ""
    fingerprint: tuple[int, ...] = ()  # of the files at the last load attempt
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    runtime: LoadedModel | None = None
    executor: Executor | None = None
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def signatures(self) -> dict[str, Signature]:
        return self.loaded().signatures

    def loaded(self) -> LoadedModel:
        if self.runtime is None:
            raise UnavailableError(f"model {self.model} version {self.version} is not loaded")
        return self.runtime

    async def predict(
        self, signature: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()
    ) -> Arrays:
        """Runs the model on validated inputs, off the event loop."""
        runtime = self.loaded()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, runtime.run, signature, inputs, outputs)

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Returns once no request is using this version."""
        await self._idle.wait()
