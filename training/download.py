"""Downloading one large file with its progress reported and its checksum checked.

Keras' `get_file` shows progress only as a terminal bar (nothing in a log) and takes no
callback, so large weights files are fetched here: into a hidden file beside the target,
checked, then renamed into place. A failed or interrupted download leaves nothing behind, and
the target only ever appears complete. No TensorFlow import.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from training.data import DataNotFoundError

CHUNK_BYTES = 1 << 20
READ_TIMEOUT_SECONDS = 30.0  # per read: a stalled connection fails instead of hanging
REPORT_SECONDS = 2.0  # progress is reported at most this often (and once at the end)

# (bytes received so far, total bytes or None when the server does not say)
Progress = Callable[[int, int | None], None]


def download(url: str, target: Path, *, md5: str | None, progress: Progress) -> Path:
    """Fetch `url` to `target` (its folder is created), checking its MD5 when given.

    Raises DataNotFoundError naming the URL and the reason (unreachable, HTTP error,
    interrupted, wrong checksum); nothing is left at `target` or beside it then.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        digest = _fetch(url, partial, progress)
        if md5 is not None and digest != md5:
            raise DataNotFoundError(
                f"{url} gave a file whose md5 is {digest}, not {md5}: not the file expected "
                "(a proxy's error page, or a changed or damaged file)"
            )
        partial.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target


def _fetch(url: str, destination: Path, progress: Progress) -> str:
    """Stream `url` into `destination`; the hex MD5 of what was received."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with (
            urllib.request.urlopen(url, timeout=READ_TIMEOUT_SECONDS) as response,
            destination.open("wb") as out,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            reported = time.monotonic()
            progress(0, total)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if time.monotonic() - reported >= REPORT_SECONDS:
                    reported = time.monotonic()
                    progress(received, total)
    except urllib.error.HTTPError as exc:
        raise DataNotFoundError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataNotFoundError(f"{url} could not be reached: {exc.reason}") from exc
    except (OSError, ValueError) as exc:  # reset, timed out, cut short (IncompleteRead)
        raise DataNotFoundError(
            f"the download of {url} broke off after {received:,} bytes: {exc!r}"
        ) from exc
    if total is not None and received != total:
        raise DataNotFoundError(
            f"the download of {url} broke off after {received:,} of {total:,} bytes"
        )
    progress(received, total)
    return digest.hexdigest()


def megabytes(count: int) -> str:
    """'41.2 MB' (10^6 bytes, as download sizes are usually given)."""
    return f"{count / 1e6:.1f} MB"


def describe_progress(received: int, total: int | None) -> str:
    """'41.2 of 102.9 MB (40 %)', or '41.2 MB' when the size is unknown."""
    if not total:
        return megabytes(received)
    return f"{received / 1e6:.1f} of {megabytes(total)} ({100 * received // total} %)"


@contextlib.contextmanager
def shown_progress(label: str) -> Iterator[Progress]:
    """A Progress for a person: a bar on a terminal, else a line per report (logs, CI)."""
    if not sys.stdout.isatty():
        yield lambda received, total: print(
            f"{label}: {describe_progress(received, total)}", flush=True
        )
        return
    from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=None)
        yield lambda received, total: bar.update(task, completed=received, total=total)
