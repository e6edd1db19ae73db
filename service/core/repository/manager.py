"""`ModelRepository` (TF Serving's AspiredVersionsManager): polls each model's source, loads
the wanted versions once their files settle, unloads the others without a gap in serving, and
routes requests. Bookkeeping stays on the event loop, so a routing table swap is atomic.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from service.core import routing
from service.core.batching import BatchObserver
from service.core.placement import DeviceSetup
from service.core.repository.loaders import LocalLoader, load_failure
from service.core.repository.sources import Fingerprint, Listing, VersionSource, source_for
from service.core.routing import SETTLING, ExportNote, ModelSnapshot, ModelView, VersionSnapshot
from service.core.servable import ServableVersion, VersionState
from service.core.serving_config import ModelConfig, ServingConfig

log = logging.getLogger(__name__)

SETTLE_SECONDS = 1.0  # a settled rescan lists again after this long while a version changes
SETTLE_LISTINGS = 5  # at most this many listings per settled rescan (then the poller goes on)


@dataclass
class _Model:
    config: ModelConfig
    source: VersionSource
    versions: dict[int, ServableVersion] = field(default_factory=dict)  # every known version
    serving: dict[int, ServableVersion] = field(default_factory=dict)  # AVAILABLE; replaced whole
    listing: Listing = field(default_factory=lambda: Listing({}))  # the last one
    load_failures: int = 0  # since the server started
    unloaded_by_admin: bool = False  # POST /admin/models/<name>/unload, until loaded again
    exporting: ExportNote | None = None  # set by service.core.auto_export

    @property
    def export_note(self) -> ExportNote | None:
        """Only while the model has no version served: once one is, it no longer matters."""
        return None if self.serving else self.exporting

    @property
    def name(self) -> str:
        return self.config.name

    def wanted(self) -> set[int]:
        return set(self.config.version_policy.select(sorted(self.listing.versions)))

    def to_load(self) -> list[int]:
        if self.unloaded_by_admin:
            return []
        found = self.listing.versions
        return [v for v in sorted(self.wanted()) if _should_load(self.versions.get(v), found[v])]

    def why_unavailable(self) -> str:
        loading = [v for v, s in self.versions.items() if s.state in SETTLING]
        failed = [
            f"version {v}: {s.error_message}" for v, s in self.versions.items() if s.error_message
        ]
        if loading:
            return f" (loading version {', '.join(map(str, loading))})"
        if self.exporting is not None:
            return f" ({self.exporting.detail})"
        if failed:
            return " (" + "; ".join(failed) + ")"
        if self.listing.error:
            return f" ({self.listing.error})"
        if not self.listing.versions:
            return f" (no version {self.source.where})"
        return ""

    def snapshot(self) -> ModelSnapshot:
        """This model's data for a front-end worker (`service.processes`)."""
        return ModelSnapshot(
            name=self.name,
            config=self.config,
            versions={v: _version_snapshot(s) for v, s in self.versions.items()},
            serving_versions=tuple(sorted(self.serving)),
            load_failures=self.load_failures,
            versions_found=tuple(sorted(self.listing.versions)),
            ignored_folders=dict(self.listing.ignored),
            unloaded_by_admin=self.unloaded_by_admin,
            unavailable_reason=self.why_unavailable(),
            export_note=self.export_note,
        )

    def view(self) -> ModelView:
        return ModelView(
            name=self.name,
            config=self.config,
            versions=tuple(s for _, s in sorted(self.versions.items())),
            ready=bool(self.serving),
            load_failures=self.load_failures,
            versions_found=tuple(sorted(self.listing.versions)),
            ignored_folders=dict(self.listing.ignored),
            unloaded_by_admin=self.unloaded_by_admin,
            export_note=self.export_note,
        )


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
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.config = config
        self.poll_interval = poll_interval
        self._settle_seconds = settle_seconds
        self._inference = inference_executor
        self._batch_observer = batch_observer  # (model, version) -> observer of its batches
        self._loader_threads = ThreadPoolExecutor(load_threads, thread_name_prefix="model-load")
        local = LocalLoader(devices, device_setup or DeviceSetup(), echo)
        self._models = {
            m.name: _Model(m, source_for(m, local, follow_symlinks, grpc_max_message_bytes))
            for m in config.models
        }
        self._listing = asyncio.Lock()  # one listing at a time, applied in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name="model-repository-poll")

    async def stop(self) -> None:
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loader_threads.shutdown(wait=False, cancel_futures=True)
        for model in self._models.values():
            model.source.close()

    async def poll_once(self) -> None:
        """Lists every model's source (off the event loop) and reconciles what is served."""
        async with self._listing:
            listings = await asyncio.to_thread(
                lambda: {name: m.source.list_versions() for name, m in self._models.items()}
            )
            for name, listing in listings.items():
                self._models[name].listing = listing
                self._reconcile(self._models[name])

    async def rescan(self, *, settled: bool = False) -> None:
        """Lists every model now; `settled` lists again while a wanted version's files change,
        so a version copied in completely starts loading now, not at the next poll."""
        await self.poll_once()
        for _ in range(SETTLE_LISTINGS - 1 if settled else 0):
            if not any(set(m.to_load()) & m.listing.changing for m in self._models.values()):
                return
            await asyncio.sleep(self._settle_seconds)
            await self.poll_once()

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a failed scan must not end polling for good
                log.exception("model repository scan failed")
            if self.poll_interval <= 0:
                return
            await asyncio.sleep(self.poll_interval)

    def model_names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[ModelView]:
        return [model.view() for model in self._models.values()]

    def snapshot(self) -> tuple[ModelSnapshot, ...]:
        return tuple(model.snapshot() for model in self._models.values())

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[ServableVersion]:
        """Every version known (in any state), ascending, or the one addressed (404 if none)."""
        return routing.statuses(self._models, model, version, label)

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> ServableVersion:
        """The AVAILABLE version a request addresses: explicit, labelled, or the newest."""
        return routing.resolve(self._models, model, version, label)

    def readiness(self) -> dict[str, bool]:
        return routing.readiness(self._models)

    def export_notes(self) -> dict[str, ExportNote]:
        return routing.export_notes(self._models)

    def note_export(self, name: str, note: ExportNote | None) -> None:
        """What `service.core.auto_export` says of a model it exports (None: nothing)."""
        self._models[name].exporting = note

    def is_ready(self) -> bool:
        return routing.is_ready(self._models)

    async def refresh(self) -> None:
        """The counters are live here (a front-end worker's mirror fetches them)."""

    async def unload_model(self, name: str) -> ModelView:
        """Keeps the model unloaded, whatever its source lists, until `load_model`."""
        return self._set_unloaded(name, True)

    async def load_model(self, name: str) -> ModelView:
        return self._set_unloaded(name, False)

    def _set_unloaded(self, name: str, unloaded: bool) -> ModelView:
        model = routing.find(self._models, name)
        assert isinstance(model, _Model)
        model.unloaded_by_admin = unloaded
        self._reconcile(model)
        return model.view()

    def _reconcile(self, model: _Model) -> None:
        if model.unloaded_by_admin:  # nothing loads, everything served unloads
            for version in list(model.serving):
                self._start_unload(model, version)
            return
        for version in model.to_load():
            if version not in model.listing.changing:  # loaded once its files stay the same
                self._start_load(model, version)
        for version, known in list(model.versions.items()):
            if version not in model.listing.versions and known.state == VersionState.END:
                del model.versions[version]  # gone from the source and from memory: forget it
        wanted = model.wanted()
        if any(model.versions[v].state in SETTLING for v in wanted if v in model.versions):
            return  # unload only once the replacements have settled
        replacement_ready = any(v in model.serving for v in wanted)
        for version in list(model.serving):
            if version not in wanted and (
                replacement_ready or version not in model.listing.versions
            ):
                self._start_unload(model, version)

    def _start_load(self, model: _Model, version: int) -> None:
        servable = ServableVersion(
            model.name,
            version,
            model.config.base_path / str(version),
            model.config,
            fingerprint=model.listing.versions[version],
        )
        model.versions[version] = servable
        self._spawn(self._load(model, servable), f"load-{model.name}-{version}")

    async def _load(self, model: _Model, servable: ServableVersion) -> None:
        servable.state = VersionState.LOADING
        what = f"model {servable.model} version {servable.version}"
        log.info("loading %s from %s", what, servable.path)
        loop = asyncio.get_running_loop()
        load = model.source.loader.load
        try:
            loaded = await loop.run_in_executor(self._loader_threads, load, servable)
        except Exception as exc:
            model.load_failures += 1
            servable.state = VersionState.END
            servable.error_code, servable.error_message = load_failure(exc, servable)
            log.error("%s failed to load: %s", what, servable.error_message)
        else:
            observe = self._batch_observer
            observer = observe(servable.model, servable.version) if observe else None
            servable.attach(loaded.runners, loaded.signatures, self._inference, observer)
            servable.load_seconds = loaded.load_seconds
            servable.warmup_seconds = loaded.warmup_seconds
            servable.state = VersionState.AVAILABLE
            model.serving = {**model.serving, servable.version: servable}
            model.exporting = None  # an exported version is served: the export is over
            devices = ", ".join(f"instance {i}: {r.device}" for i, r in enumerate(loaded.runners))
            seconds = loaded.load_seconds, loaded.warmup_seconds
            log.info("%s AVAILABLE (load %.2f s, warm-up %.2f s) on %s", what, *seconds, devices)
        _refreeze_heap()
        self._reconcile(model)

    def _start_unload(self, model: _Model, version: int) -> None:
        servable = model.serving[version]
        servable.state = VersionState.UNLOADING
        model.serving = {v: s for v, s in model.serving.items() if v != version}
        self._spawn(self._unload(servable), f"unload-{model.name}-{version}")

    async def _unload(self, servable: ServableVersion) -> None:
        what = f"model {servable.model} version {servable.version}"
        log.info("unloading %s (%d in flight)", what, servable.in_flight)
        await servable.drained()
        await servable.close()  # drops the instances: TensorFlow frees graphs and weights
        _refreeze_heap()
        servable.state = VersionState.END
        log.info("%s unloaded", what)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _should_load(known: ServableVersion | None, fingerprint: Fingerprint) -> bool:
    """An ended version loads again: a failed one only once its files changed."""
    if known is None:
        return True
    if known.state != VersionState.END:
        return False
    return known.error_code == "OK" or known.fingerprint != fingerprint


def _refreeze_heap() -> None:
    """Freezes the heap: a full collection over the millions of TensorFlow objects costs
    150-200 ms (a p99 spike). Unfreezing first lets an unloaded version's cycles be collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _version_snapshot(servable: ServableVersion) -> VersionSnapshot:
    return VersionSnapshot(
        model=servable.model,
        version=servable.version,
        path=servable.path,
        config=servable.config,
        state=servable.state,
        error_code=servable.error_code,
        error_message=servable.error_message,
        fingerprint=servable.fingerprint,
        load_seconds=servable.load_seconds,
        warmup_seconds=servable.warmup_seconds,
        signatures=servable.signatures,
        details=servable.serving_details(),
    )
