"""`python -m training.auto_export NAME --model-dir DIR [--source SOURCE] [--parent PID]`: the
export `modelserve serve` runs in the background for a missing model that needs no training
(`training.jobs.ready_made`). A process of its own: the memory TensorFlow takes to build and
trace the model goes back to the system when it ends, and its Python does not hold up serving.

Its stdout carries one JSON object a line, for the server (everything else it prints goes to
stderr):

    {"stage": "download", "received": 41200000, "total": 102853048}
    {"stage": "export"}
    {"stage": "done", "version": 1, "seconds": 71.2}
    {"stage": "failed", "reason": "..."}

A failed or interrupted run (SIGTERM, or its parent's death) leaves no file behind: the download
and the version are written under hidden names and renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from service.processes.orphans import die_with_parent
from training.data import DataNotFoundError
from training.jobs import NEEDS_NO_TRAINING, ready_made
from training.options import TrainOptions


class Reporter:
    """Writes the status lines to the stream the server reads."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, stage: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"stage": stage, **fields}) + "\n")
        self.stream.flush()

    def download(self, received: int, total: int | None) -> None:
        self("download", received=received, total=total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(NEEDS_NO_TRAINING))
    parser.add_argument("--model-dir", type=Path, required=True, help="the model's folder")
    parser.add_argument("--source", help="a local copy or a mirror URL of the files to fetch")
    parser.add_argument("--parent", type=int, help="stop when this process (the server) ends")
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    report = Reporter(_status_stream())
    job = ready_made(args.name)
    assert job is not None  # argparse allowed only these names
    options = TrainOptions(
        output=args.model_dir.parent,
        model_dir=args.model_dir,
        keep_versions=None,
        weights=args.source,
    )
    start = time.monotonic()
    try:
        fetched = job.fetch(options, report.download)
        report("export")
        version_dir = job.export(options, fetched)
    except DataNotFoundError as exc:  # says what is missing and how to provide it
        report("failed", reason=str(exc).splitlines()[0])
        return 1
    except Exception as exc:  # any other failure still reaches the server's log as one line
        report("failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise  # the traceback goes to stderr
    report("done", version=int(version_dir.name), seconds=round(time.monotonic() - start, 1))
    return 0


def _status_stream() -> TextIO:
    """The real stdout, for status lines only; file descriptor 1 then points to stderr, so what
    TensorFlow, Keras and the job print cannot be mistaken for status."""
    status = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return status


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds (the partial files are removed on the way) instead of ending at once."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
