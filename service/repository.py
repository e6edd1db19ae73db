"""The model repository manager: which versions exist, which are served, and swapping them.

Every `poll_interval` seconds it lists each model's base path (in a thread), applies the
model's version policy, and
- loads wanted versions that are new (or failed before and changed on disk since) once their
  files are settled (unchanged since the previous scan; the first scan loads at once), so a
  version being copied in is not loaded half-way: load and warm-up run in a thread pool; a
  version takes traffic only once it is AVAILABLE;
- unloads versions no longer wanted: the version leaves the routing table at once (no new
  requests), finishes the requests it holds, then is released. Unloading waits until the
  wanted versions have settled, and while none of them is AVAILABLE a version still on disk
  keeps serving (TF Serving's availability-preserving policy), so a swap never leaves a gap.

All bookkeeping happens on the event loop thread, so a routing table swap is atomic for the
requests that read it. A version that fails to load (corrupt, unreadable, half-copied) is
recorded with its error, without file-system paths, and affects nothing else; a model folder
that cannot be listed keeps its last listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from google.protobuf.message import DecodeError

from service import request_context
from service.batching import BatchObserver, Runner
from service.errors import NotFoundError, ServingError, UnavailableError
from service.layout import scan_versions
from service.placement import DeviceSetup, place_instances
from service.remote import RemoteBackend, RemoteRunner
from service.runtime import EchoModel, LoadedModel, error_summary
from service.servable import ServableVersion, VersionState
from service.serving_config import ModelConfig, ServingConfig

log = logging.getLogger(__name__)

_SETTLING = (VersionState.START, VersionState.LOADING)


@dataclass
class ModelEntry:
    config: ModelConfig
    versions: dict[int, ServableVersion] = field(default_factory=dict)  # every known version
    serving: dict[int, ServableVersion] = field(default_factory=dict)  # AVAILABLE; replaced whole
    on_disk: dict[int, tuple[int, ...]] = field(default_factory=dict)  # version -> fingerprint
    previous: dict[int, tuple[int, ...]] = field(default_factory=dict)  # the scan before
    scans: int = 0  # listings taken
    listing_error: str = ""  # why the last listing of the model's folder failed
    ignored: dict[str, str] = field(default_factory=dict)  # folder -> why it is no version
    load_failures: int = 0  # since the server started
    backend: RemoteBackend | None = None  # a remote gRPC backend runs the model
    backend_error: str = ""  # why the last scan of the backend failed
    backend_generation: int = 0  # counts the backend's outages: a failed load retries after one
    held: bool = False  # unloaded by an admin (POST /admin/models/<name>/unload) until loaded

    @property
    def name(self) -> str:
        return self.config.name


class ModelRepository:
    def __init__(
        self,
        config: ServingConfig,
        *,
        poll_interval: float,
        inference_executor: Executor,
        load_threads: int = 2,
        devices: Sequence[str] = (),
        device_setup: DeviceSetup | None = None,
        echo: bool = False,
        batch_observer: Callable[[str, int], BatchObserver] | None = None,
        grpc_max_message_bytes: int = 64 * 1024 * 1024,
        follow_symlinks: bool = False,
    ) -> None:
        self.config = config
        self._follow_symlinks = follow_symlinks  # version folders that are symbolic links
        self.poll_interval = poll_interval
        self._inference = inference_executor
        self._devices = list(devices)
        self._device_setup = device_setup or DeviceSetup()
        self._echo = echo
        self._batch_observer = batch_observer  # (model, version) -> observer of its batches
        self._loader = ThreadPoolExecutor(load_threads, thread_name_prefix="model-load")
        self._models = {model.name: ModelEntry(model) for model in config.models}
        for entry in self._models.values():
            if entry.config.backend is not None:
                entry.backend = RemoteBackend(
                    entry.name, entry.config.backend, grpc_max_message_bytes
                )
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Starts discovery and loading in the background; returns at once."""
        self._poller = asyncio.create_task(self._poll_forever(), name="model-repository-poll")

    async def stop(self) -> None:
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        for entry in self._models.values():
            if entry.backend is not None:
                entry.backend.close()

    async def poll_once(self) -> None:
        """Lists every model directory or backend (off the event loop) and reconciles what is
        served."""
        follow = self._follow_symlinks
        listings = await asyncio.to_thread(
            lambda: {name: _list_versions(entry, follow) for name, entry in self._models.items()}
        )
        for name, on_disk in listings.items():
            entry = self._models[name]
            if on_disk is None:  # unreadable now: keep serving what it held
                continue
            entry.previous, entry.on_disk = entry.on_disk, on_disk
            entry.scans += 1
            self._reconcile(entry)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a failed scan must not end polling for good
                log.exception("model repository scan failed")
            if self.poll_interval <= 0:
                return
            await asyncio.sleep(self.poll_interval)

    # -- queries ---------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return list(self._models)

    def entry(self, model: str) -> ModelEntry:
        """A served model's entry (404 otherwise); notes the model on the current request."""
        try:
            entry = self._models[model]
        except KeyError:
            served = ", ".join(self._models) or "none"
            raise NotFoundError(f"model {model!r} is not served; models: {served}") from None
        request_context.note_model(model)
        return entry

    def entries(self) -> list[ModelEntry]:
        return list(self._models.values())

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[ServableVersion]:
        """Every version the server knows of, ascending (AVAILABLE, loading, failed,
        unloaded), or the one addressed by `version` or `label` (404 if unknown)."""
        if label is not None:
            version = self.label_version(model, label)
        versions = [v for _, v in sorted(self.entry(model).versions.items())]
        if version is None:
            return versions
        addressed = [v for v in versions if v.version == version]
        if not addressed:
            raise NotFoundError(f"model {model!r} has no version {version}")
        return addressed

    def label_version(self, model: str, label: str) -> int:
        labels = self.entry(model).config.version_labels
        if label not in labels:
            known = ", ".join(labels) or "none"
            raise NotFoundError(f"model {model!r} has no version label {label!r}; labels: {known}")
        return labels[label]

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> ServableVersion:
        """The AVAILABLE version a request addresses: explicit, labelled, or the newest."""
        entry = self.entry(model)
        if entry.held:
            raise UnavailableError(
                f"model {model!r} is unloaded by an admin (POST /admin/models/{model}/load "
                "serves it again)"
            )
        if label is not None:
            version = self.label_version(model, label)
        if version is None:
            if not entry.serving:
                raise UnavailableError(f"model {model!r} has no available version yet{_why(entry)}")
            version = max(entry.serving)
        if version in entry.serving:
            request_context.note_model(model, version)
            return entry.serving[version]
        known = entry.versions.get(version)
        if known is not None and known.state in _SETTLING:
            raise UnavailableError(f"model {model!r} version {version} is still loading")
        if known is not None and known.error_message:
            raise NotFoundError(
                f"model {model!r} version {version} failed to load: {known.error_message}"
            )
        raise NotFoundError(f"model {model!r} has no servable version {version}")

    @contextlib.asynccontextmanager
    async def lease(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> AsyncIterator[ServableVersion]:
        """Holds a version for one request, so unloading waits for the request to finish."""
        servable = self.resolve(model, version, label)
        servable.enter()
        try:
            yield servable
        finally:
            servable.leave()

    def readiness(self) -> dict[str, bool]:
        """Per model: does it have at least one AVAILABLE version?"""
        return {name: bool(entry.serving) for name, entry in self._models.items()}

    def is_ready(self) -> bool:
        """Does every model have an AVAILABLE version, except those an admin unloaded (a
        deliberate unload must not take the replica out of rotation)?"""
        return all(bool(entry.serving) for entry in self._models.values() if not entry.held)

    # -- admin -----------------------------------------------------------------------------

    def hold(self, model: str) -> ModelEntry:
        """Unloads every version of `model` (each once its requests finish) and keeps it
        unloaded, whatever is on disk, until `release`."""
        entry = self.entry(model)
        entry.held = True
        self._reconcile(entry)
        return entry

    def release(self, model: str) -> ModelEntry:
        """Serves `model` again after `hold`: its wanted versions load."""
        entry = self.entry(model)
        entry.held = False
        self._reconcile(entry)
        return entry

    # -- reconciliation ----------------------------------------------------------------------

    def _reconcile(self, entry: ModelEntry) -> None:
        if entry.held:  # an admin's unload: nothing loads, everything served unloads
            for version in list(entry.serving):
                self._start_unload(entry, version)
            return
        on_disk = entry.on_disk
        wanted = set(entry.config.version_policy.select(sorted(on_disk)))
        for version in sorted(wanted):
            known = entry.versions.get(version)
            wanted_load = known is None or _should_reload(known, on_disk[version])
            if wanted_load and _settled(entry, version):
                self._start_load(entry, version, on_disk[version])
        for version, known in list(entry.versions.items()):
            if version not in on_disk and known.state == VersionState.END:
                del entry.versions[version]  # gone from disk and from memory: forget it
        if any(entry.versions[v].state in _SETTLING for v in wanted if v in entry.versions):
            return  # unload only once the replacements have settled
        replacement_ready = any(v in entry.serving for v in wanted)
        for version in list(entry.serving):
            if version not in wanted and (replacement_ready or version not in on_disk):
                self._start_unload(entry, version)

    def _start_load(self, entry: ModelEntry, version: int, fingerprint: tuple[int, ...]) -> None:
        servable = ServableVersion(
            entry.name,
            version,
            entry.config.base_path / str(version),
            entry.config,
            fingerprint=fingerprint,
        )
        entry.versions[version] = servable
        self._spawn(self._load(entry, servable), f"load-{entry.name}-{version}")

    async def _load(self, entry: ModelEntry, servable: ServableVersion) -> None:
        servable.state = VersionState.LOADING
        log.info(
            "loading model %s version %d from %s", servable.model, servable.version, servable.path
        )
        loop = asyncio.get_running_loop()
        try:
            instances, load_seconds, warmup_seconds = await loop.run_in_executor(
                self._loader, self._load_instances, servable
            )
        except Exception as exc:
            entry.load_failures += 1
            servable.state = VersionState.END
            servable.error_code = _load_error_code(exc)
            servable.error_message = _without_paths(
                f"{type(exc).__name__}: {error_summary(exc)}", servable
            )
            log.error(
                "model %s version %d failed to load: %s",
                servable.model,
                servable.version,
                servable.error_message,
            )
        else:
            runners: Sequence[Runner] = (
                [EchoModel(i.signatures) for i in instances] if self._echo else instances
            )
            observer = (
                self._batch_observer(servable.model, servable.version)
                if self._batch_observer
                else None
            )
            servable.attach(runners, instances[0].signatures, self._inference, observer)
            servable.load_seconds = load_seconds
            servable.warmup_seconds = warmup_seconds
            servable.state = VersionState.AVAILABLE
            entry.serving = {**entry.serving, servable.version: servable}
            log.info(
                "model %s version %d AVAILABLE (load %.2f s, warm-up %.2f s) on %s",
                servable.model,
                servable.version,
                load_seconds,
                warmup_seconds,
                ", ".join(f"instance {i}: {r.device}" for i, r in enumerate(runners)),
            )
        _refreeze_heap()
        self._reconcile(entry)

    def _load_instances(
        self, servable: ServableVersion
    ) -> tuple[list[LoadedModel] | list[RemoteRunner], float, float]:
        """Loads one copy of the version per instance on its device and warms each up at every
        allowed batch size (blocking: runs on the loader threads). A remote version's
        instances are runners calling its backend, which warms up on its own."""
        backend = self._models[servable.model].backend
        if backend is not None:
            start = time.perf_counter()
            remote = backend.load(servable.version, servable.config.placement.instances)
            return remote, time.perf_counter() - start, 0.0
        devices = place_instances(
            servable.config.placement, self._devices, servable.path, self._device_setup
        )
        start = time.perf_counter()
        instances = [
            LoadedModel(servable.model, servable.version, servable.path, device)
            for device in devices
        ]
        load_seconds = time.perf_counter() - start
        batching = servable.config.batching
        sizes = batching.batch_sizes() if batching.enabled else (1,)
        warmup_seconds = sum(instance.warm_up(sizes) for instance in instances)
        return instances, load_seconds, warmup_seconds

    def _start_unload(self, entry: ModelEntry, version: int) -> None:
        servable = entry.serving[version]
        servable.state = VersionState.UNLOADING
        entry.serving = {v: s for v, s in entry.serving.items() if v != version}
        self._spawn(self._unload(servable), f"unload-{entry.name}-{version}")

    async def _unload(self, servable: ServableVersion) -> None:
        log.info(
            "unloading model %s version %d (%d in flight)",
            servable.model,
            servable.version,
            servable.in_flight,
        )
        await servable.drained()
        await servable.close()  # drops the instances: TensorFlow frees graphs and weights
        _refreeze_heap()
        servable.state = VersionState.END
        log.info("model %s version %d unloaded", servable.model, servable.version)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _should_reload(known: ServableVersion, fingerprint: tuple[int, ...]) -> bool:
    """An ended version is loaded again when wanted again: a failed one only once its files
    changed (a copy finished, a fix landed), a cleanly unloaded one at once."""
    if known.state != VersionState.END:
        return False
    return known.error_code == "OK" or known.fingerprint != fingerprint


def _settled(entry: ModelEntry, version: int) -> bool:
    """Are the version's files unchanged since the previous scan? A copy in progress changes
    them; a remote backend's versions and the first scan's need no wait."""
    if entry.backend is not None or entry.scans <= 1:
        return True
    return entry.previous.get(version) == entry.on_disk[version]


def _refreeze_heap() -> None:
    """Moves every live object into the garbage collector's permanent generation.

    With TensorFlow and the models loaded the heap holds millions of objects, and a full
    collection walks them all (150-200 ms, a p99 spike whenever request garbage triggers one).
    Frozen objects are never walked. Run after each load (so the new version is frozen too) and
    after each unload (unfreezing first, so the old version's cycles can be collected).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _list_versions(
    entry: ModelEntry, follow_symlinks: bool = False
) -> dict[int, tuple[int, ...]] | None:
    """Version -> fingerprint: of the files on disk (None when the model's folder cannot be
    listed), or of the backend's outages (a backend that went away and came back may serve a
    version anew)."""
    if entry.backend is None:
        base_path = entry.config.base_path
        try:
            scan = scan_versions(base_path, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if not entry.listing_error:
                log.warning("model %s: cannot list %s: %s", entry.name, base_path, exc)
            reason = exc.strerror or type(exc).__name__
            entry.listing_error = f"cannot list the versions of model {entry.name}: {reason}"
            return None
        entry.listing_error = ""
        _note_ignored(entry, scan.ignored)
        return {v: _fingerprint(base_path / str(v)) for v in scan.versions}
    try:
        versions = entry.backend.available_versions()
    except ServingError as exc:
        if not entry.backend_error:
            entry.backend_generation += 1
            log.warning("model %s: %s", entry.name, exc.message)
        entry.backend_error = exc.message
        return {}
    entry.backend_error = ""
    return {v: (v, entry.backend_generation) for v in versions}


def _note_ignored(entry: ModelEntry, ignored: dict[str, str]) -> None:
    """Keeps the folders ignored as versions (shown by /api/v1/models); logs each once."""
    for name, reason in ignored.items():
        if entry.ignored.get(name) != reason:
            log.warning("model %s: folder %r ignored: %s", entry.name, name[:80], reason)
    entry.ignored = ignored


def _fingerprint(version_dir: Path) -> tuple[int, ...]:
    """Name, size and change time of every file under the version, and a marker for each
    folder or file it cannot read: changes while a copy progresses, when a version is replaced
    in place, and when permissions change (a chmod sets the change time)."""
    parts: list[int] = []
    folders = [version_dir]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError:
            parts.extend((hash(str(folder)), -1, -1))
            continue
        for item in entries:
            try:
                if item.is_dir(follow_symlinks=False):  # no symlink loops
                    folders.append(Path(item.path))
                    continue
                stat = item.stat()
                parts.extend((hash(item.path), stat.st_size, stat.st_ctime_ns))
            except OSError:
                parts.extend((hash(item.path), -1, -1))
    return tuple(parts)


_LOAD_ERROR_CODES: list[tuple[tuple[type[Exception], ...], str]] = [
    ((FileNotFoundError, tf.errors.NotFoundError), "NOT_FOUND"),
    ((PermissionError, tf.errors.PermissionDeniedError), "PERMISSION_DENIED"),
    ((DecodeError, tf.errors.DataLossError), "DATA_LOSS"),
    ((ValueError, tf.errors.InvalidArgumentError), "INVALID_ARGUMENT"),
]


def _load_error_code(exc: Exception) -> str:
    for kinds, code in _LOAD_ERROR_CODES:
        if isinstance(exc, kinds):
            return code
    return "UNKNOWN"


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[\w.@+~-]+){2,}/?")


def _without_paths(message: str, servable: ServableVersion) -> str:
    """The message with the version's folder shown as `<model>/<version>` and any other
    absolute path cut to its last part: status and errors are for clients, who have no
    business knowing the server's file system."""
    for folder in {str(servable.path.resolve()), str(servable.path)}:
        message = message.replace(folder, f"{servable.model}/{servable.version}")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group().rstrip("/").rsplit("/", 1)[-1], message)


def _why(entry: ModelEntry) -> str:
    loading = [v for v, s in entry.versions.items() if s.state in _SETTLING]
    failed = [
        f"version {v}: {s.error_message}" for v, s in entry.versions.items() if s.error_message
    ]
    if loading:
        return f" (loading version {', '.join(map(str, loading))})"
    if failed:
        return " (" + "; ".join(failed) + ")"
    if entry.backend_error:
        return f" ({entry.backend_error})"
    if entry.listing_error:
        return f" ({entry.listing_error})"
    if not entry.on_disk:
        where = f"at {entry.backend.address}" if entry.backend else "in its folder"
        return f" (no version {where})"
    return ""
