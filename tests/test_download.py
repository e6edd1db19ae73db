"""Downloads with progress and an md5 check (training/download.py), ResNet50's weights through
them (mirror URLs, Keras' cache) and the auto-export child's status lines, against a real HTTP
server on loopback.

The server (`served`) answers each path from a route the test sets: the bytes with or without
Content-Length, a Content-Length larger than the bytes then a closed connection (cut off) or
a stall (to stop the child mid-download), and 404 for any path without a route. Every failure
must leave nothing behind: no target and no hidden partial file beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.route_server import CHUNK, RouteServer
from tests.server import free_port
from training import download as download_module
from training import resnet50
from training.data import DataNotFoundError
from training.download import describe_progress, download, megabytes
from training.resnet50 import Weights, WeightsNotAvailableError, keras_cache, resolve_weights

BODY = random.Random(0).randbytes(10_000)


@pytest.fixture(autouse=True)
def often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small reads, each reported: progress is seen more than once even for 10 kB."""
    monkeypatch.setattr(download_module, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(download_module, "REPORT_SECONDS", 0.0)


class ProgressLog:
    """A progress callback that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, received: int, total: int | None) -> None:
        self.calls.append((received, total))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, hidden ones included ([] when it does not exist)."""
    return sorted(
        str(Path(root, name).relative_to(folder))
        for root, _, names in os.walk(folder)
        for name in names
    )


def failed_download(url: str, target: Path, expected_md5: str | None = None) -> str:
    """Download `url` expecting DataNotFoundError; its message. Nothing may be left behind."""
    with pytest.raises(DataNotFoundError) as caught:
        download(url, target, md5=expected_md5, progress=ProgressLog())
    assert files_under(target.parent) == []
    message = str(caught.value)
    assert url in message
    return message


def test_download_writes_the_file_and_reports_progress(served: RouteServer, tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "weights.h5"  # the folder does not exist yet
    log = ProgressLog()
    assert download(served.serve("/w", BODY), target, md5=md5(BODY), progress=log) == target
    assert target.read_bytes() == BODY
    assert files_under(target.parent) == ["weights.h5"]
    received = [r for r, _ in log.calls]
    assert received == sorted(received)
    assert log.calls[0] == (0, len(BODY))
    assert log.calls[-1] == (len(BODY), len(BODY))
    assert {total for _, total in log.calls} == {len(BODY)}
    assert any(0 < r < len(BODY) for r in received)  # reported along the way, not only at the end


def test_download_without_content_length(served: RouteServer, tmp_path: Path) -> None:
    target = tmp_path / "weights.h5"
    log = ProgressLog()
    download(served.serve("/w", BODY, sized=False), target, md5=md5(BODY), progress=log)
    assert target.read_bytes() == BODY
    assert log.calls[0] == (0, None)
    assert log.calls[-1] == (len(BODY), None)
    assert {total for _, total in log.calls} == {None}


def test_download_without_md5_takes_any_file(served: RouteServer, tmp_path: Path) -> None:
    download(served.serve("/w", BODY), tmp_path / "w", md5=None, progress=ProgressLog())
    assert (tmp_path / "w").read_bytes() == BODY


def test_wrong_md5_leaves_nothing(served: RouteServer, tmp_path: Path) -> None:
    expected = md5(b"another file")
    message = failed_download(served.serve("/w", BODY), tmp_path / "w.h5", expected)
    assert expected in message
    assert md5(BODY) in message


@pytest.mark.parametrize("missing", [1, 5_000])
def test_cut_off_download_leaves_nothing(served: RouteServer, tmp_path: Path, missing: int) -> None:
    # the server promises more than it sends, then closes the connection
    url = served.serve("/w", BODY, missing=missing)
    message = failed_download(url, tmp_path / "w.h5", md5(BODY))
    assert "broke off" in message
    assert f"{len(BODY):,}" in message  # how far it got


def test_http_error_leaves_nothing(served: RouteServer, tmp_path: Path) -> None:
    assert "HTTP 404" in failed_download(served.url("/nothing-here"), tmp_path / "w.h5")


def test_unreachable_server_leaves_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/w.h5"
    assert "could not be reached" in failed_download(url, tmp_path / "w.h5")


def test_file_url(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "w.h5"
    source.parent.mkdir()
    source.write_bytes(BODY)
    log = ProgressLog()
    target = tmp_path / "cache" / "w.h5"
    download(source.as_uri(), target, md5=md5(BODY), progress=log)
    assert target.read_bytes() == BODY
    assert log.calls[-1] == (len(BODY), len(BODY))
    # a missing file is a clear error too, and leaves nothing
    assert "could not be reached" in failed_download(
        (tmp_path / "mirror" / "gone.h5").as_uri(), tmp_path / "cache2" / "w.h5"
    )


def test_existing_target_is_replaced_only_by_a_complete_correct_file(
    served: RouteServer, tmp_path: Path
) -> None:
    target = tmp_path / "w.h5"
    target.write_bytes(b"the old file")
    failures = [
        (served.serve("/wrong", b"not it"), md5(BODY)),
        (served.serve("/cut", BODY, missing=1), md5(BODY)),
        (served.url("/missing"), None),
    ]
    for url, expected in failures:
        with pytest.raises(DataNotFoundError):
            download(url, target, md5=expected, progress=ProgressLog())
        assert target.read_bytes() == b"the old file"
        assert files_under(tmp_path) == ["w.h5"]
    download(served.serve("/w", BODY), target, md5=md5(BODY), progress=ProgressLog())
    assert target.read_bytes() == BODY
    assert files_under(tmp_path) == ["w.h5"]


@pytest.mark.parametrize(
    ("received", "total", "text"),
    [
        (41_200_000, 102_900_000, "41.2 of 102.9 MB (40 %)"),
        (0, 102_853_048, "0.0 of 102.9 MB (0 %)"),
        (102_853_048, 102_853_048, "102.9 of 102.9 MB (100 %)"),
        (102_800_000, 102_853_048, "102.8 of 102.9 MB (99 %)"),  # 100 % only when complete
        (41_200_000, None, "41.2 MB"),
        (0, None, "0.0 MB"),
    ],
)
def test_describe_progress(received: int, total: int | None, text: str) -> None:
    assert describe_progress(received, total) == text


def test_megabytes_are_decimal() -> None:
    assert megabytes(1_000_000) == "1.0 MB"
    assert megabytes(102_853_048) == "102.9 MB"


def test_weights_from_a_mirror_with_the_wrong_file_are_refused(
    served: RouteServer, keras_home: Path
) -> None:
    url = served.serve("/resnet50.h5", BODY)  # not Keras' file: the md5 cannot match
    log = ProgressLog()
    with pytest.raises(WeightsNotAvailableError) as caught:
        resolve_weights(url, allow_download=True, progress=log)
    message = str(caught.value)
    for part in (resnet50.WEIGHTS_FILE, resnet50.WEIGHTS_MD5, "--weights", url, md5(BODY)):
        assert part in message
    assert any(received > 0 for received, _ in log.calls)  # downloaded, then refused
    assert served.hits == ["/resnet50.h5"]
    assert files_under(keras_home) == []


def test_weights_from_an_unreachable_mirror_say_how_to_provide_them(keras_home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/resnet50.h5"
    with pytest.raises(WeightsNotAvailableError) as caught:
        resolve_weights(url, allow_download=True, progress=ProgressLog())
    assert "could not be reached" in str(caught.value)
    assert resnet50.weights_help() in str(caught.value)
    assert files_under(keras_home) == []


def test_intact_cached_weights_are_used_without_a_download(
    served: RouteServer, keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = keras_cache() / resnet50.WEIGHTS_FILE
    assert cached.parent == keras_home / "models"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in weights")
    monkeypatch.setattr(resnet50, "WEIGHTS_MD5", md5(b"stand-in weights"))
    log = ProgressLog()
    weights = resolve_weights(None, allow_download=False, progress=log)
    assert weights == Weights(path=cached, origin=resnet50.WEIGHTS_URL)
    # a mirror is not asked either while the cached copy is intact
    url = served.serve("/resnet50.h5", BODY)
    assert resolve_weights(url, allow_download=True, progress=log).path == cached
    assert served.hits == []
    assert log.calls == []


def test_damaged_cached_weights_are_downloaded_again(
    served: RouteServer, keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = keras_cache() / resnet50.WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a damaged copy")
    monkeypatch.setattr(resnet50, "WEIGHTS_MD5", md5(BODY))
    with pytest.raises(WeightsNotAvailableError, match="--no-download"):
        resolve_weights(None, allow_download=False, progress=ProgressLog())

    url = served.serve("/resnet50.h5", BODY)
    log = ProgressLog()
    assert resolve_weights(url, allow_download=True, progress=log) == Weights(
        path=cached, origin=url
    )
    assert cached.read_bytes() == BODY
    assert log.calls[-1] == (len(BODY), len(BODY))
    assert files_under(keras_home) == [f"models/{resnet50.WEIGHTS_FILE}"]


def auto_export(tmp_path: Path, source: str) -> dict[str, Any]:
    """subprocess arguments running the auto-export child for resnet50, Keras' home in tmp."""
    command = [sys.executable, "-m", "training.auto_export", "resnet50"]
    command += ["--model-dir", str(tmp_path / "models" / "resnet50"), "--source", source]
    return {"args": command, "env": {**os.environ, "KERAS_HOME": str(tmp_path / "keras")}}


def run_auto_export(tmp_path: Path, source: str) -> tuple[int, list[dict[str, Any]]]:
    """The auto-export child's exit code and its stdout, parsed line by line."""
    done = subprocess.run(
        **auto_export(tmp_path, source), capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # JSON and nothing else
    return done.returncode, lines


def test_auto_export_with_a_missing_source_fails_with_a_status_line(tmp_path: Path) -> None:
    code, lines = run_auto_export(tmp_path, str(tmp_path / "missing.h5"))
    assert code == 1
    assert lines[-1]["stage"] == "failed"
    assert "missing.h5" in lines[-1]["reason"]
    assert files_under(tmp_path / "models" / "resnet50") == []
    assert files_under(tmp_path / "keras") == []


def test_auto_export_with_a_wrong_mirror_reports_the_download_then_fails(
    served: RouteServer, tmp_path: Path
) -> None:
    code, lines = run_auto_export(tmp_path, served.serve("/resnet50.h5", BODY))
    assert code == 1
    stages = [line["stage"] for line in lines]
    assert stages[-1] == "failed"
    assert "download" in stages[:-1]
    assert "md5" in lines[-1]["reason"]
    assert lines[-2] == {"stage": "download", "received": len(BODY), "total": len(BODY)}
    assert files_under(tmp_path / "models" / "resnet50") == []
    assert files_under(tmp_path / "keras") == []


def test_auto_export_stdout_stays_json_while_the_job_prints(tmp_path: Path) -> None:
    # a local file is taken as is (the job prints its path, TensorFlow logs), then Keras
    # refuses to load it: the export stage starts and fails, leaving no version behind
    junk = tmp_path / "junk.h5"
    junk.write_bytes(BODY)
    code, lines = run_auto_export(tmp_path, str(junk))
    assert code == 1
    assert [line["stage"] for line in lines] == ["export", "failed"]
    assert "could not load ResNet50 weights" in lines[-1]["reason"]
    assert files_under(tmp_path / "models") == []
    assert files_under(tmp_path / "keras" / "models") == []


def test_auto_export_stopped_mid_download_leaves_nothing(
    served: RouteServer, tmp_path: Path
) -> None:
    # the server sends a little of a large file, then nothing: SIGTERM (the server stopping
    # the child) arrives during the download and must remove the partial file on the way out
    url = served.serve("/resnet50.h5", BODY, missing=100_000_000, stall=True)
    cache = tmp_path / "keras" / "models"
    child = subprocess.Popen(
        **auto_export(tmp_path, url), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        assert started == {"stage": "download", "received": 0, "total": len(BODY) + 100_000_000}
        [partial] = files_under(cache)  # open before the first report
        assert partial.startswith(f".{resnet50.WEIGHTS_FILE}.part-")
        child.terminate()
        assert child.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert files_under(cache) == []
    assert files_under(tmp_path / "models") == []
