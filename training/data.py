"""Finding training data: an explicit path, the data folder, then the public download.

Data sets are never copied into the repository (the small ones that ship with the package are
in training/data/). A job takes `--data PATH`, else looks in `$MODELSERVE_DATA_DIR`, and only
then tries the usual public download, unless downloads are turned off (`--no-download`). When
nothing is found, the error says every place it looked and why no download gave the data:
turned off, or failed (with the reason).

Without `$MODELSERVE_DATA_DIR`, a `shared/data/` folder beside the checkout (or beside the
current directory) is the data folder: a convenience for development machines that keep the
data sets there. Setting the variable replaces it, so a run can be isolated from it.
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
    """Folders searched for data sets when no explicit path is given, most specific first:
    `$MODELSERVE_DATA_DIR` when set, else the development fallbacks beside the checkout."""
    if env_dir := os.environ.get(DATA_DIR_ENV):
        return [Path(env_dir)]
    dirs = [Path.cwd().parent / "shared" / "data", PROJECT_ROOT.parent / "shared" / "data"]
    unique: list[Path] = []
    for folder in dirs:
        if folder.resolve() not in [d.resolve() for d in unique]:
            unique.append(folder)
    return unique


def find_data_file(explicit: Path | None, file_name: str, *, what: str) -> Path | None:
    """Return `explicit` if given (it must exist), else the first copy of `file_name` in the
    data folders.

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
    download: Callable[[], Path],
    url: str,
    allow_download: bool,
) -> Path:
    """`explicit`, else a copy of `file_name` in the data folders, else what `download`
    fetches from `url` (only when `allow_download`); otherwise an error listing every place
    looked in and saying why no download gave the data: turned off, or failed and why."""
    path = find_data_file(explicit, file_name, what=what)
    if path is not None:
        return path
    if not allow_download:
        why = f"Downloads are turned off (--no-download), so {url} was not tried."
    else:
        try:
            return download()
        except DataNotFoundError as exc:
            why = f"The download of {url} failed: {exc}"
    raise missing_data_error(file_name, what=what, why=why)


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


def missing_data_error(file_name: str, *, what: str, why: str) -> DataNotFoundError:
    """The error raised when neither a local copy nor a download gave us the data; `why` says
    what became of the download."""
    looked = "\n".join(f"  - {d / file_name}" for d in shared_data_dirs())
    return DataNotFoundError(
        f"{what} not found. Looked in:\n{looked}\n{why}\n"
        f"Provide it with --data PATH, or set {DATA_DIR_ENV} to a folder holding {file_name}."
    )


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, recorded in model cards so a model names its exact data."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
