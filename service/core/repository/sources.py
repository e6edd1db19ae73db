"""Version sources: a model folder or a remote backend, listed on demand with a fingerprint
per version that changes when the version does. Listings block: callers run them in a thread."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from service.core.layout import scan_versions
from service.core.remote import RemoteBackend
from service.core.repository.loaders import Loader, LocalLoader, RemoteLoader
from service.core.serving_config import ModelConfig
from service.errors import ServingError

log = logging.getLogger(__name__)

Fingerprint = tuple[int, ...]


@dataclass(frozen=True)
class Listing:
    versions: Mapping[int, Fingerprint]  # version -> fingerprint
    changing: frozenset[int] = frozenset()  # changed since the listing before: not loaded yet
    ignored: Mapping[str, str] = field(default_factory=dict)  # folder -> why it is no version
    error: str = ""  # why listing failed (the versions are then those listed last)


class VersionSource(Protocol):
    loader: Loader  # builds the instances of this source's versions
    where: str  # where versions are looked for, e.g. "in its folder"

    def list_versions(self) -> Listing: ...

    def close(self) -> None: ...


class DirectorySource:
    """`<base_path>/<version>/` folders; a version whose files changed since the listing before
    (a copy in progress) is `changing`. A folder that cannot be listed repeats the last listing."""

    where = "in its folder"

    def __init__(self, config: ModelConfig, loader: Loader, follow_symlinks: bool) -> None:
        self.name = config.name
        self.base_path = config.base_path
        self.loader = loader
        self._follow_symlinks = follow_symlinks  # version folders that are symbolic links
        self._last = Listing({})
        self._listed = False  # has a listing succeeded yet?

    def list_versions(self) -> Listing:
        try:
            scan = scan_versions(self.base_path, follow_symlinks=self._follow_symlinks)
        except OSError as exc:
            if not self._last.error:  # log an outage once, not at every listing
                log.warning("model %s: cannot list %s: %s", self.name, self.base_path, exc)
            reason = exc.strerror or type(exc).__name__
            error = f"cannot list the versions of model {self.name}: {reason}"
            self._last = replace(self._last, error=error)
            return self._last
        for folder, reason in scan.ignored.items():  # each once, while it stays ignored
            if self._last.ignored.get(folder) != reason:
                log.warning("model %s: folder %r ignored: %s", self.name, folder[:80], reason)
        versions = {v: fingerprint(self.base_path / str(v)) for v in scan.versions}
        before = self._last.versions if self._listed else versions
        changing = frozenset(v for v, f in versions.items() if before.get(v) != f)
        self._last, self._listed = Listing(versions, changing, scan.ignored), True
        return self._last

    def close(self) -> None:
        pass


class RemoteSource:
    """The versions a remote backend has AVAILABLE. An unreachable backend lists none; each
    outage bumps the fingerprints, so a failed version is tried again once the backend is back."""

    def __init__(self, name: str, backend: RemoteBackend, loader: Loader) -> None:
        self.name = name
        self.backend = backend
        self.loader = loader
        self.where = f"at {backend.address}"
        self._error = ""
        self._outages = 0

    def list_versions(self) -> Listing:
        try:
            versions = self.backend.available_versions()
        except ServingError as exc:
            if not self._error:
                self._outages += 1
                log.warning("model %s: %s", self.name, exc.message)
            self._error = exc.message
            return Listing({}, error=self._error)
        self._error = ""
        return Listing({v: (v, self._outages) for v in versions})

    def close(self) -> None:
        self.backend.close()


def source_for(
    config: ModelConfig, local: LocalLoader, follow_symlinks: bool, grpc_max_message_bytes: int
) -> VersionSource:
    """A model's source, with its loader: its remote backend's, else its folder's (`local`)."""
    if config.backend is None:
        return DirectorySource(config, local, follow_symlinks)
    backend = RemoteBackend(config.name, config.backend, grpc_max_message_bytes)
    return RemoteSource(config.name, backend, RemoteLoader(backend, local.echo))


def fingerprint(version_dir: Path) -> Fingerprint:
    """Name, size and change time of every file (a chmod sets the change time too), and a
    marker for each folder or file it cannot read."""
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
