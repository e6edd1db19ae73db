"""Loaders build the instances of one version, blocking, on a loader thread. In echo mode
(benchmarks only) the instances are replaced by `EchoModel`s once loaded."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import tensorflow as tf
from google.protobuf.message import DecodeError

from service.core.batching import Runner
from service.core.paths import without_paths
from service.core.placement import DeviceSetup, place_instances
from service.core.remote import RemoteBackend, RemoteRunner
from service.core.runtime import EchoModel, LoadedModel, error_summary
from service.core.servable import ServableVersion
from service.core.signatures import Signature


@dataclass(frozen=True)
class Loaded:
    runners: Sequence[Runner]  # one per instance
    signatures: dict[str, Signature]
    load_seconds: float
    warmup_seconds: float


class Loader(Protocol):
    def load(self, servable: ServableVersion) -> Loaded: ...


class LocalLoader:
    """SavedModels from disk, one copy per instance on the devices placement chooses."""

    def __init__(self, devices: Sequence[str], device_setup: DeviceSetup, echo: bool) -> None:
        self.devices = list(devices)
        self.device_setup = device_setup
        self.echo = echo

    def load(self, servable: ServableVersion) -> Loaded:
        """Loads and warms up each instance at every batch size the model allows."""
        placement = servable.config.placement
        devices = place_instances(placement, self.devices, servable.path, self.device_setup)
        start = time.perf_counter()
        instances = [
            LoadedModel(servable.model, servable.version, servable.path, device)
            for device in devices
        ]
        load_seconds = time.perf_counter() - start
        batching = servable.config.batching
        sizes = batching.batch_sizes() if batching.enabled else (1,)
        warmup_seconds = sum(instance.warm_up(sizes) for instance in instances)
        signatures = instances[0].signatures
        return Loaded(_echoed(instances, self.echo), signatures, load_seconds, warmup_seconds)


class RemoteLoader:
    """Runners calling a remote backend, which warms its models up on its own."""

    def __init__(self, backend: RemoteBackend, echo: bool) -> None:
        self.backend = backend
        self.echo = echo

    def load(self, servable: ServableVersion) -> Loaded:
        start = time.perf_counter()
        runners = self.backend.load(servable.version, servable.config.placement.instances)
        seconds = time.perf_counter() - start
        return Loaded(_echoed(runners, self.echo), runners[0].signatures, seconds, 0.0)


def _echoed(instances: Sequence[LoadedModel | RemoteRunner], echo: bool) -> Sequence[Runner]:
    return [EchoModel(i.signatures) for i in instances] if echo else instances


_LOAD_ERROR_CODES: list[tuple[tuple[type[Exception], ...], str]] = [
    ((FileNotFoundError, tf.errors.NotFoundError), "NOT_FOUND"),
    ((PermissionError, tf.errors.PermissionDeniedError), "PERMISSION_DENIED"),
    ((DecodeError, tf.errors.DataLossError), "DATA_LOSS"),
    ((ValueError, tf.errors.InvalidArgumentError), "INVALID_ARGUMENT"),
]


def load_failure(exc: Exception, servable: ServableVersion) -> tuple[str, str]:
    """The canonical code and the message of a failed load, without file-system paths."""
    code = next((c for kinds, c in _LOAD_ERROR_CODES if isinstance(exc, kinds)), "UNKNOWN")
    return code, _without_paths(f"{type(exc).__name__}: {error_summary(exc)}", servable)


def _without_paths(message: str, servable: ServableVersion) -> str:
    """The version's folder shown as `<model>/<version>`, any other absolute path cut to its
    last part: clients have no business knowing the server's file system."""
    shown = f"{servable.model}/{servable.version}"
    return without_paths(message, {str(servable.path.resolve()): shown, str(servable.path): shown})
