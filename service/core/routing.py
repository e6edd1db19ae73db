"""What a request addresses, resolved the same way wherever the models are: in this process
(`ModelRepository`) or in the model process, seen from a front-end worker through the catalog
it sends (`ModelSnapshot`s). TensorFlow-free."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from service.core.servable import ServableVersion, VersionState
from service.core.serving_config import ModelConfig
from service.core.signatures import DEFAULT_SIGNATURE, Signature, named_signature
from service.errors import NotFoundError, UnavailableError

SETTLING = (VersionState.START, VersionState.LOADING)


@dataclass(frozen=True)
class ExportNote:
    """A model with no version that the server exports itself (`service.core.auto_export`):
    coming (the export runs, or its version loads) or not (the export failed). Such a model
    does not hold readiness back: the others serve meanwhile, and it may never come."""

    coming: bool
    stage: str  # short, for a badge: "downloading 41 %", "exporting", "not exported"
    detail: str  # the whole story, for /readyz, the log and 503s

    def as_json(self) -> dict[str, Any]:
        state = "coming" if self.coming else "failed"
        return {"state": state, "stage": self.stage, "detail": self.detail}


class KnownVersion(Protocol):
    @property
    def state(self) -> VersionState: ...
    @property
    def error_message(self) -> str: ...


V = TypeVar("V", bound=KnownVersion, covariant=True)


class Entry(Protocol[V]):
    """One served model, as routing needs it."""

    @property
    def config(self) -> ModelConfig: ...
    @property
    def versions(self) -> Mapping[int, V]: ...  # every version known
    @property
    def serving(self) -> Mapping[int, V]: ...  # AVAILABLE
    @property
    def unloaded_by_admin(self) -> bool: ...
    @property
    def export_note(self) -> ExportNote | None: ...  # while it has no version
    def why_unavailable(self) -> str: ...  # " (loading version 2)", or ""


def find(entries: Mapping[str, Entry[V]], name: str) -> Entry[V]:
    """A served model (404 otherwise)."""
    try:
        return entries[name]
    except KeyError:
        served = ", ".join(entries) or "none"
        raise NotFoundError(f"model {name!r} is not served; models: {served}") from None


def label_version(entries: Mapping[str, Entry[V]], model: str, label: str) -> int:
    labels = find(entries, model).config.version_labels
    if label not in labels:
        known = ", ".join(labels) or "none"
        raise NotFoundError(f"model {model!r} has no version label {label!r}; labels: {known}")
    return labels[label]


def statuses(
    entries: Mapping[str, Entry[V]], model: str, version: int | None, label: str | None
) -> list[V]:
    """Every version known (in any state), ascending, or the one addressed (404 if none)."""
    if label is not None:
        version = label_version(entries, model, label)
    versions = find(entries, model).versions
    if version is None:
        return [v for _, v in sorted(versions.items())]
    if version not in versions:
        raise NotFoundError(f"model {model!r} has no version {version}")
    return [versions[version]]


def resolve(
    entries: Mapping[str, Entry[V]], model: str, version: int | None, label: str | None
) -> V:
    """The AVAILABLE version a request addresses: explicit, labelled, or the newest."""
    entry = find(entries, model)
    if entry.unloaded_by_admin:
        raise UnavailableError(
            f"model {model!r} is unloaded by an admin (POST /admin/models/{model}/load "
            "serves it again)"
        )
    if label is not None:
        version = label_version(entries, model, label)
    if version is None:
        if not entry.serving:
            raise UnavailableError(
                f"model {model!r} has no available version yet{entry.why_unavailable()}"
            )
        version = max(entry.serving)
    if version in entry.serving:
        return entry.serving[version]
    known = entry.versions.get(version)
    if known is not None and known.state in SETTLING:
        raise UnavailableError(f"model {model!r} version {version} is still loading")
    if known is not None and known.error_message:
        raise NotFoundError(
            f"model {model!r} version {version} failed to load: {known.error_message}"
        )
    raise NotFoundError(f"model {model!r} has no servable version {version}")


def readiness(entries: Mapping[str, Entry[V]]) -> dict[str, bool]:
    return {name: bool(entry.serving) for name, entry in entries.items()}


def is_ready(entries: Mapping[str, Entry[V]]) -> bool:
    """Admin-unloaded models are left out: a deliberate unload keeps the replica in rotation;
    so are models the server exports itself (`ExportNote`)."""
    return all(
        bool(e.serving)
        for e in entries.values()
        if not e.unloaded_by_admin and e.export_note is None
    )


def export_notes(entries: Mapping[str, Entry[V]]) -> dict[str, ExportNote]:
    """The models the server is exporting, or failed to export, by name."""
    return {name: e.export_note for name, e in entries.items() if e.export_note is not None}


@dataclass
class VersionSnapshot:
    """One model version as the model process last reported it (`ServableVersion`'s data)."""

    model: str
    version: int
    path: Path
    config: ModelConfig
    state: VersionState
    error_code: str
    error_message: str
    fingerprint: tuple[int, ...]
    load_seconds: float
    warmup_seconds: float
    signatures: dict[str, Signature]
    details: dict[str, Any]  # serving_details() when the snapshot was taken
    # set by the worker that received it: makes the signature's remote batcher
    batcher_factory: Callable[[VersionSnapshot, str], Any] | None = field(
        default=None, compare=False, repr=False
    )

    def serving_details(self) -> dict[str, Any]:
        return self.details

    def signature(self, name: str) -> Signature:
        return named_signature(self.signatures, name, self.model, self.version)

    def batcher(self, signature_name: str = DEFAULT_SIGNATURE) -> Any:
        self.signature(signature_name)  # 400 for an unknown signature
        if self.batcher_factory is None:
            raise UnavailableError(f"model {self.model} version {self.version} is not loaded")
        return self.batcher_factory(self, signature_name)

    def check_capacity(self) -> None:
        """The model process's queue refuses what it cannot take (one bound for all workers)."""

    def enter(self) -> None:
        """The model process holds the version while it runs the request."""

    def leave(self) -> None:
        pass


Servable = ServableVersion | VersionSnapshot  # a version in this process, or in the model process


@dataclass(frozen=True)
class ModelView:
    """A snapshot of one model (admin, overview, metrics); its versions are live ones in the
    model process and the last reported ones in a front-end worker."""

    name: str
    config: ModelConfig
    versions: tuple[Any, ...]  # ServableVersion or VersionSnapshot, ascending
    ready: bool  # has an AVAILABLE version
    load_failures: int  # versions that failed to load since the server started
    versions_found: tuple[int, ...]  # by the last listing (kept while a folder is unreadable)
    ignored_folders: Mapping[str, str]  # folder -> why it is no version
    unloaded_by_admin: bool
    export_note: ExportNote | None  # exported by the server, while it has no version


@dataclass
class ModelSnapshot:
    """One model as the model process last reported it (`ModelView`'s data, and routing's)."""

    name: str
    config: ModelConfig
    versions: dict[int, VersionSnapshot]
    serving_versions: tuple[int, ...]
    load_failures: int
    versions_found: tuple[int, ...]
    ignored_folders: dict[str, str]
    unloaded_by_admin: bool
    unavailable_reason: str
    export_note: ExportNote | None
    serving: dict[int, VersionSnapshot] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.serving = {v: self.versions[v] for v in self.serving_versions}

    @property
    def ready(self) -> bool:
        return bool(self.serving_versions)

    def why_unavailable(self) -> str:
        return self.unavailable_reason

    def view(self) -> ModelView:
        return ModelView(
            name=self.name,
            config=self.config,
            versions=tuple(v for _, v in sorted(self.versions.items())),
            ready=self.ready,
            load_failures=self.load_failures,
            versions_found=self.versions_found,
            ignored_folders=self.ignored_folders,
            unloaded_by_admin=self.unloaded_by_admin,
            export_note=self.export_note,
        )
