"""Read-only snapshots of the repository's models, for status pages, metrics and admin routes
(`ModelRepository.models()`): what they show is taken at once, so it is consistent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.servable import ServableVersion, VersionState
from service.serving_config import ModelConfig


@dataclass(frozen=True)
class VersionView:
    version: int
    state: VersionState
    error: str  # why it failed to load ("" otherwise)
    load_seconds: float
    warmup_seconds: float
    servable: ServableVersion  # live: its instances, batchers and their counters


@dataclass(frozen=True)
class ModelView:
    name: str
    config: ModelConfig
    versions: tuple[VersionView, ...]  # every version known, ascending
    ready: bool  # has an AVAILABLE version
    load_failures: int  # versions that failed to load since the server started
    versions_found: tuple[int, ...]  # by the last listing that succeeded
    ignored_folders: Mapping[str, str]  # folder -> why it is no version
    unloaded_by_admin: bool


def version_view(servable: ServableVersion) -> VersionView:
    return VersionView(
        servable.version,
        servable.state,
        servable.error_message,
        servable.load_seconds,
        servable.warmup_seconds,
        servable,
    )
