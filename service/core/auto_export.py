"""Exporting, in the background, the served models that are missing and need no training
(today `resnet50`: Keras' ImageNet weights, no data), so that `modelserve serve` brings them
up on its own while the other models serve.

Each export runs `python -m training.auto_export` in a child process (one at a time) and reads
its status lines: progress goes to the log and to the model's `ExportNote` (readiness, the
overview, 503s); the version it writes appears atomically and is loaded by a rescan. When the
export fails, one warning line says why and how to provide the files; the model stays listed,
unavailable, and the others keep serving. Models that need training are never trained here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from service.core.layout import existing_versions
from service.core.paths import without_paths
from service.core.repository import ModelRepository
from service.core.routing import ExportNote
from service.core.serving_config import ModelConfig, ServingConfig
from service.settings import Settings
from training.download import describe_progress
from training.jobs import ReadyMade, ready_made

log = logging.getLogger(__name__)

DOWNLOAD_LOG_SECONDS = 5.0  # download progress is logged at most this often
STDERR_LINES_KEPT = 20  # of a failed export's stderr, logged at debug level
STOP_SECONDS = 10.0  # after SIGTERM (the child removes its partial files), before SIGKILL


def exportable(config: ServingConfig) -> list[tuple[ModelConfig, ReadyMade]]:
    """The served models with no version on disk that a job can export without training."""
    found = []
    for model in config.models:
        job = ready_made(model.name)
        if job is not None and model.backend is None and not existing_versions(model.base_path):
            found.append((model, job))
    return found


class AutoExports:
    """The background exports of one server: started with the repository, stopped with it."""

    def __init__(
        self, settings: Settings, config: ServingConfig, repository: ModelRepository
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.planned = exportable(config) if settings.auto_export else []
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if not self.planned:
            return
        for model, job in self.planned:
            detail = f"to be exported by the server in the background; it fetches {job.fetches}"
            self.repository.note_export(model.name, ExportNote(True, "waiting", detail))
        self._task = asyncio.create_task(self._export_all(), name="auto-export")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._stop_child()

    async def _export_all(self) -> None:
        for model, job in self.planned:
            try:
                await self._export(model, job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end the others' exports
                log.exception("the automatic export of %s failed", model.name)
                self._failed(model, job, f"{type(exc).__name__}: {exc}")

    async def _export(self, model: ModelConfig, job: ReadyMade) -> None:
        name = model.name
        if existing_versions(model.base_path):  # someone exported it meanwhile
            self.repository.note_export(name, None)
            return
        problem = _not_writable(model.base_path)
        if problem:
            self._failed(model, job, problem)
            return
        log.info("%s is missing: exporting it in the background (%s)", name, job.fetches)
        source = getattr(self.settings, job.source_setting)
        command = [sys.executable, "-m", "training.auto_export", name]
        command += ["--model-dir", str(model.base_path), "--parent", str(os.getpid())]
        if source:
            command += ["--source", str(source)]
        self._child = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        assert self._child.stderr is not None
        drain = asyncio.create_task(_keep_lines(self._child.stderr, stderr_tail))
        outcome = await self._follow(model, job, self._child)
        await self._child.wait()
        await drain
        code, self._child = self._child.returncode, None
        if outcome is None:  # ended without a word: killed, or it crashed on start
            outcome = f"the export process ended with exit code {code} and no status"
        if outcome != "done":
            log.debug("%s export's last output:\n%s", name, "\n".join(stderr_tail))
            self._failed(model, job, outcome)

    async def _follow(
        self, model: ModelConfig, job: ReadyMade, child: asyncio.subprocess.Process
    ) -> str | None:
        """Reads the child's status lines: "done", the reason it failed, or None."""
        name, logged = model.name, 0.0
        assert child.stdout is not None
        async for raw in child.stdout:
            try:
                status: dict[str, Any] = json.loads(raw)
            except ValueError:
                continue  # not a status line
            stage = status.get("stage")
            if stage == "download":
                received, total = int(status["received"]), status.get("total")
                progress = describe_progress(received, total)
                short = f"downloading {100 * received // total} %" if total else "downloading"
                note = f"being exported by the server: downloading {job.fetches}: {progress}"
                self.repository.note_export(name, ExportNote(True, short, note))
                done = total is not None and received == total
                if done or time.monotonic() - logged >= DOWNLOAD_LOG_SECONDS:
                    logged = time.monotonic()
                    log.info("%s: downloading %s", name, progress)
            elif stage == "export":
                note = "being exported by the server: building and saving the SavedModel"
                self.repository.note_export(name, ExportNote(True, "exporting", note))
                log.info("%s: exporting the SavedModel", name)
            elif stage == "done":
                version = status.get("version")
                log.info(
                    "%s: exported version %s in %s s; loading it",
                    name,
                    version,
                    status.get("seconds"),
                )
                note = f"exported by the server as version {version}: loading it"
                self.repository.note_export(name, ExportNote(True, "loading", note))
                await self.repository.rescan(settled=True)
                return "done"
            elif stage == "failed":
                return str(status.get("reason") or "no reason given")
        return None

    def _failed(self, model: ModelConfig, job: ReadyMade, reason: str) -> None:
        """One warning line: what happened and how to provide the files; the model stays
        unavailable (and out of readiness) until a version appears."""
        if existing_versions(model.base_path):
            return  # a version appeared meanwhile: it serves, nothing to warn about
        turn_off = "MODELSERVE_AUTO_EXPORT=0 (--no-auto-export) turns the automatic export off"
        detail = f"not exported: {reason}. To serve it, {job.how_to_provide}"
        log.warning("%s is not served: %s; %s", model.name, detail, turn_off)
        # /readyz and 503s are public: the log has the paths, clients see file names
        public = without_paths(detail, {str(model.base_path): model.name})
        self.repository.note_export(model.name, ExportNote(False, "not exported", public))

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)  # it removes its partial files, then exits
        try:
            await asyncio.wait_for(child.wait(), STOP_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def _keep_lines(stream: asyncio.StreamReader, kept: deque[str]) -> None:
    async for line in stream:
        kept.append(line.decode(errors="replace").rstrip())


def _not_writable(model_dir: Path) -> str:
    """Why the export could not write `model_dir` ('' when it can)."""
    folder = model_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable by this server (user id {os.getuid()})"
    return ""
