"""The repository's seams, without TensorFlow models: a directory source's listings, a remote
source across an outage, the manager's settled rescan (driven by scripted listings, no waiting)
and its read-only view."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service.core.placement import DeviceSetup
from service.core.repository import ModelRepository, ModelView
from service.core.repository import manager as manager_module
from service.core.repository import sources as sources_module
from service.core.repository.loaders import Loaded, LocalLoader
from service.core.repository.manager import SETTLE_LISTINGS
from service.core.repository.sources import DirectorySource, Listing, RemoteSource
from service.core.servable import ServableVersion, VersionState
from service.core.serving_config import ModelConfig, ServingConfig
from service.errors import UnavailableError

NO_LOADER = LocalLoader([], DeviceSetup(), echo=False)


def write_version(base: Path, version: str, content: bytes = b"pb") -> Path:
    folder = base / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(content)
    return folder


# --- the directory source ---------------------------------------------------------------


def test_a_directory_source_lists_versions_names_changing_ones_and_ignored_folders(
    tmp_path: Path,
) -> None:
    base = tmp_path / "m"
    write_version(base, "1")
    write_version(base, "2")
    write_version(base, "01")
    (base / "tmp").mkdir()
    (base / "3").symlink_to(base / "2")
    source = DirectorySource(ModelConfig(name="m", base_path=base), NO_LOADER, False)

    first = source.list_versions()
    assert set(first.versions) == {1, 2}
    assert first.changing == frozenset(), "the first listing loads what it finds"
    assert set(first.ignored) == {"01", "3"}
    assert "symbolic link" in first.ignored["3"]
    assert first.error == ""

    with (base / "2" / "saved_model.pb").open("ab") as pb:
        pb.write(b"more")
    write_version(base, "4")
    second = source.list_versions()
    assert set(second.versions) == {1, 2, 4}
    assert second.changing == {2, 4}
    assert second.versions[1] == first.versions[1]
    assert source.list_versions().changing == frozenset(), "unchanged since the listing before"

    following = DirectorySource(ModelConfig(name="m", base_path=base), NO_LOADER, True)
    assert set(following.list_versions().versions) == {1, 2, 3, 4}


def test_a_folder_that_cannot_be_listed_repeats_the_last_listing_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "m"
    write_version(base, "1")
    write_version(base, "01")
    source = DirectorySource(ModelConfig(name="m", base_path=base), NO_LOADER, False)
    listed = source.list_versions()

    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(sources_module, "scan_versions", refuse)
        failed = source.list_versions()
    assert failed.versions == listed.versions and failed.ignored == listed.ignored
    assert failed.error == "cannot list the versions of model m: Permission denied"
    assert str(tmp_path) not in failed.error
    assert source.list_versions() == listed, "readable again: no error"


class FlakyBackend:
    address = "backend:8500"

    def __init__(self) -> None:
        self.up = True

    def available_versions(self) -> list[int]:
        if not self.up:
            raise UnavailableError("backend backend:8500: UNAVAILABLE: connection refused")
        return [1]

    def close(self) -> None:
        pass


def test_a_remote_source_lists_none_in_an_outage_and_new_fingerprints_after() -> None:
    backend = FlakyBackend()
    source = RemoteSource("m", backend, NO_LOADER)  # type: ignore[arg-type]
    before = source.list_versions()
    assert set(before.versions) == {1} and before.error == "" and not before.changing
    backend.up = False
    outage = source.list_versions()
    assert outage.versions == {} and "connection refused" in outage.error
    assert source.list_versions() == outage, "one outage, however many listings"
    backend.up = True
    after = source.list_versions()
    assert set(after.versions) == {1} and after.error == ""
    assert after.versions[1] != before.versions[1], "a failed load is tried again"
    assert source.where == "at backend:8500"


# --- the manager, on scripted listings ----------------------------------------------------


class FakeRunner:
    device = "fake"

    def run(self, *_: object, **__: object) -> dict[str, np.ndarray]:
        return {}


class ScriptedSource:
    """Returns the listings it is given, in turn (the last one again once they run out)."""

    where = "in its script"

    def __init__(self, *listings: Listing, failing: frozenset[int] = frozenset()) -> None:
        self.script = list(listings)
        self.listed = 0
        self.loader = self
        self.failing = failing  # versions whose load fails

    def list_versions(self) -> Listing:
        self.listed += 1
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def load(self, servable: ServableVersion) -> Loaded:
        if servable.version in self.failing:
            raise ValueError(f"cannot read {servable.path}/saved_model.pb")
        return Loaded([FakeRunner()], {}, 0.5, 0.25)

    def close(self) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Models whose sources are the ScriptedSource put in the returned dict by name."""
    sources: dict[str, object] = {}
    monkeypatch.setattr(manager_module, "source_for", lambda config, *_: sources[config.name])
    yield sources


def repository_of(names: list[str], tmp_path: Path, **options: float) -> ModelRepository:
    models = [ModelConfig(name=name, base_path=tmp_path / name) for name in names]
    config = ServingConfig(models=models, source="test")
    executor = ThreadPoolExecutor(1)
    return ModelRepository(config, poll_interval=0, inference_executor=executor, **options)


def fingerprints(versions: dict[int, int]) -> dict[int, tuple[int, ...]]:
    return {version: (mark,) for version, mark in versions.items()}


async def settled_states(repository: ModelRepository) -> dict[str, dict[int, VersionState]]:
    """Each model's version states once no version is loading or unloading."""
    busy = {VersionState.START, VersionState.LOADING, VersionState.UNLOADING}
    for _ in range(500):
        states = {m.name: {v.version: v.state for v in m.versions} for m in repository.models()}
        if not any(busy & set(versions.values()) for versions in states.values()):
            return states
        await asyncio.sleep(0.01)
    raise AssertionError(f"loads and unloads did not finish: {states}")


def test_a_settled_rescan_lists_again_until_new_files_stay_the_same(
    scripted: dict[str, object], tmp_path: Path
) -> None:
    source = ScriptedSource(
        Listing(fingerprints({1: 0})),
        Listing(fingerprints({1: 0, 2: 1}), changing=frozenset({2})),
        Listing(fingerprints({1: 0, 2: 2}), changing=frozenset({2})),
        Listing(fingerprints({1: 0, 2: 2})),
    )
    scripted["m"] = source
    repository = repository_of(["m"], tmp_path, settle_seconds=0)

    async def main() -> None:
        await repository.rescan(settled=True)
        assert source.listed == 1, "nothing was changing: one listing"
        assert await settled_states(repository) == {"m": {1: VersionState.AVAILABLE}}
        await repository.rescan(settled=True)
        assert source.listed == 4, "listed until version 2 stopped changing"
        states = await settled_states(repository)
        assert states == {"m": {1: VersionState.END, 2: VersionState.AVAILABLE}}, "swapped"
        await repository.stop()

    asyncio.run(main())


def test_a_settled_rescan_gives_up_on_a_version_that_keeps_changing(
    scripted: dict[str, object], tmp_path: Path
) -> None:
    changing = [Listing(fingerprints({1: 0, 2: n}), changing=frozenset({2})) for n in range(1, 20)]
    source = ScriptedSource(Listing(fingerprints({1: 0})), *changing)
    scripted["m"] = source
    repository = repository_of(["m"], tmp_path, settle_seconds=0)

    async def main() -> None:
        await repository.rescan()
        await repository.rescan(settled=True)
        assert source.listed == 1 + SETTLE_LISTINGS
        states = await settled_states(repository)
        assert states == {"m": {1: VersionState.AVAILABLE}}, "1 serves until 2 can replace it"
        await repository.stop()

    asyncio.run(main())


def test_a_settled_rescan_does_not_wait_when_nothing_new_is_changing(
    scripted: dict[str, object], tmp_path: Path
) -> None:
    """A version that keeps changing but is not wanted (policy latest 1 wants 2 only) is no
    reason to wait: with an hour to wait between listings the rescan still returns at once."""
    source = ScriptedSource(Listing(fingerprints({1: 0, 2: 0}), changing=frozenset({1})))
    scripted["m"] = source
    repository = repository_of(["m"], tmp_path, settle_seconds=3600)

    async def main() -> None:
        await asyncio.wait_for(repository.rescan(settled=True), timeout=5)
        assert source.listed == 1
        await repository.stop()

    asyncio.run(main())


# --- the read-only view ---------------------------------------------------------------------


def test_the_view_is_a_snapshot_of_versions_failures_and_admin_unloads(
    scripted: dict[str, object], tmp_path: Path
) -> None:
    scripted["good"] = ScriptedSource(Listing(fingerprints({1: 0}), ignored={"01": "not plain"}))
    scripted["bad"] = ScriptedSource(Listing(fingerprints({3: 0})), failing=frozenset({3}))
    repository = repository_of(["good", "bad"], tmp_path)

    async def main() -> None:
        await repository.rescan()
        await settled_states(repository)
        good, bad = repository.models()
        assert isinstance(good, ModelView)
        assert (good.name, good.ready, good.versions_found) == ("good", True, (1,))
        assert [(v.version, v.state, v.load_seconds) for v in good.versions] == [
            (1, VersionState.AVAILABLE, 0.5)
        ]
        assert good.ignored_folders == {"01": "not plain"}
        assert not good.unloaded_by_admin and good.load_failures == 0
        assert (bad.ready, bad.load_failures, bad.versions_found) == (False, 1, (3,))
        assert str(tmp_path) not in bad.versions[0].error_message
        assert "bad/3" in bad.versions[0].error_message
        with pytest.raises(dataclasses.FrozenInstanceError):
            good.ready = False  # type: ignore[misc]

        unloaded = await repository.unload_model("good")
        assert unloaded.unloaded_by_admin and not good.unloaded_by_admin, "a snapshot"
        assert (await settled_states(repository))["good"] == {1: VersionState.END}
        assert not repository.models()[0].ready
        assert repository.readiness() == {"good": False, "bad": False}
        with pytest.raises(UnavailableError, match="unloaded by an admin"):
            repository.resolve("good")

        assert not (await repository.load_model("good")).unloaded_by_admin
        assert (await settled_states(repository))["good"] == {1: VersionState.AVAILABLE}
        assert repository.resolve("good").version == 1
        await repository.stop()

    asyncio.run(main())
