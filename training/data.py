"""Finding training data on disk: an explicit path, then the shared data folder.

Data sets are never copied into the repository; a job takes `--data PATH`, else looks in
`$MODELSERVE_DATA_DIR`, else in `../shared/data` (beside the checkout), and only then tries
the usual public download. When nothing is found, the error says every place it looked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

DATA_DIR_ENV = "MODELSERVE_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found anywhere we looked; the message says how to provide it."""


def shared_data_dirs() -> list[Path]:
    """Folders searched for data sets when no explicit path is given, most specific first."""
    dirs: list[Path] = []
    if env_dir := os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(env_dir))
    dirs.append(Path.cwd().parent / "shared" / "data")
    dirs.append(PROJECT_ROOT.parent / "shared" / "data")
    unique: list[Path] = []
    for folder in dirs:
        if folder.resolve() not in [d.resolve() for d in unique]:
            unique.append(folder)
    return unique


def find_data_file(explicit: Path | None, file_name: str, *, what: str) -> Path | None:
    """Return `explicit` if given (it must exist), else the first shared copy of `file_name`.

    Returns None when no local copy exists, so the caller can try a download; an explicit
    path that does not exist is an error straight away, never silently replaced.
    """
    if explicit is not None:
        if not explicit.exists():
            raise DataNotFoundError(f"{what}: --data {explicit} does not exist.")
        return explicit
    for folder in shared_data_dirs():
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def locate_data(
    explicit: Path | None,
    file_name: str,
    *,
    what: str,
    download: Callable[[], Path] | None,
    download_hint: str,
) -> Path:
    """`explicit`, else a shared copy of `file_name`, else what `download` fetches (None when
    downloads are off); otherwise an error listing every place looked in and why the download
    failed."""
    path = find_data_file(explicit, file_name, what=what)
    if path is not None:
        return path
    if download is not None:
        try:
            return download()
        except DataNotFoundError as exc:
            download_hint = f"{download_hint}\n  ({exc})"
    raise missing_data_error(file_name, what=what, download_hint=download_hint)


def keras_download(
    file_name: str,
    url: str,
    *,
    file_hash: str | None = None,
    cache_subdir: str = "datasets",
    extract: bool = False,
) -> Path:
    """Keras' own download into its cache (a cached copy is used without network)."""
    import keras

    try:
        return Path(
            keras.utils.get_file(
                file_name, url, file_hash=file_hash, cache_subdir=cache_subdir, extract=extract
            )
        )
    except Exception as exc:  # Keras raises a bare Exception for DNS and HTTP failures
        raise DataNotFoundError(str(exc)) from exc  # Keras' message names the URL


def missing_data_error(file_name: str, *, what: str, download_hint: str) -> DataNotFoundError:
    """The error raised when neither a local copy nor a download gave us the data."""
    looked = "\n".join(f"  - {d / file_name}" for d in shared_data_dirs())
    return DataNotFoundError(
        f"{what} not found. Looked in:\n{looked}\n{download_hint}\n"
        f"Provide it with --data PATH, or set {DATA_DIR_ENV} to a folder holding {file_name}."
    )


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, recorded in model cards so a model names its exact data."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
