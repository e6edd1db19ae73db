"""`modelserve serve` with workers: this process starts the model process and the front-end
workers, restarts any that dies, and on SIGTERM drains the workers (each finishes what it
accepted) before it stops the model process. It imports no TensorFlow itself."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Any

from service.core.serving_config import ServingConfig
from service.logs import configure_logging
from service.processes import worker
from service.settings import Settings

log = logging.getLogger(__name__)

MODEL_PROCESS_START_SECONDS = 600.0  # TensorFlow's import and the models' load take a while
RESTART_PAUSE_SECONDS = 0.5  # between restarts of a process that keeps dying
EARLY_EXIT_SECONDS = 10.0  # a process that dies this soon after its start failed to start
EARLY_EXITS_ALLOWED = 5  # in a row, per process, before the server gives up (exit 1)
STOP_GRACE_SECONDS = 10.0  # beyond the drain time, before a worker is killed
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker's glibc malloc settings (a value the user set is kept; the model process, with
# TensorFlow's threads, keeps glibc's defaults):
# - MALLOC_ARENA_MAX: glibc gives each thread that allocates (decode pools, gRPC) an arena of
#   its own, up to 8 per core, where freed image buffers linger. With 2, a worker under ResNet50
#   load at 64 connections held 83-120 MB of private memory instead of 131-164 MB, at the same
#   req/s.
# - the mmap and trim thresholds: glibc's own (mmap from 128 KB, rising to the largest block
#   freed; the heap's free top given back above twice that) returned a worker's heap to the
#   kernel after every 1 MB photo request, whose copies outgrow two of its size: 454 page
#   faults a request, about 0.8 ms of its latency at one connection. A worker keeps up to 16 MB
#   of freed heap instead.
WORKER_MALLOC = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(8 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(16 << 20),
}


def free_port(host: str) -> int:
    """A port nothing listens on now (for a setting of 0: every worker must bind the same)."""
    with worker.bound_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


class Supervisor:
    def __init__(self, settings: Settings, serving_config: ServingConfig) -> None:
        self.count = settings.front_end_workers()
        self.settings = settings.model_copy(
            update={
                "port": settings.port or free_port(settings.host),
                "grpc_port": settings.grpc_port or free_port(settings.host),
            }
        )
        self.serving_config = serving_config
        self._context = multiprocessing.get_context("spawn")  # no forked threads or TF state
        self._ready = self._context.Array("b", self.count, lock=False)
        self._drained = self._context.Array("b", self.count, lock=False)
        self._run_dir = Path(tempfile.mkdtemp(prefix="modelserve-"))
        self._socket_path = self._run_dir / "model-process.sock"
        self._metrics_dir = self._run_dir / "metrics"
        self._metrics_dir.mkdir()
        self._model_process: SpawnProcess | None = None
        self._workers: dict[int, SpawnProcess] = {}
        self._started: dict[str, float] = {}  # process name -> when it was last started
        self._early_exits: dict[str, int] = {}  # process name -> early exits in a row
        self._stopping = False
        self._stopped_at = 0.0  # time.monotonic() of the first stop
        self._signals = 0
        self.failed = False

    def run(self) -> None:
        configure_logging(self.settings.log_level, self.settings.log_format)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info(
                "starting the model process and %d worker(s): REST on port %d, gRPC on port %d",
                self.count,
                self.settings.port,
                self.settings.grpc_port,
            )
            self._start_model_process()
            for number in range(self.count):
                self._start_worker(number)
            self._watch()
        finally:
            self._shut_down()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        """The first signal drains the workers; a second one is passed on (they stop at once,
        answering what is left with 503); a third kills everything."""
        if frame is None and self._stopping:  # a failure while stopping: nothing more to do
            return
        self._signals += 1
        if self._signals > 2:
            for process in self._processes():
                process.kill()
            return
        if self._signals == 1:
            log.info("%s: draining the workers", signal.Signals(sig).name)
        if not self._stopping:
            self._stopped_at = time.monotonic()
        self._stopping = True
        for process in self._workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    def _processes(self) -> list[SpawnProcess]:
        model = [self._model_process] if self._model_process is not None else []
        return [*self._workers.values(), *model]

    def _start_model_process(self) -> None:
        process = self._context.Process(
            target=_run_model_process,
            args=(self.settings, self.serving_config, self._socket_path, os.getpid()),
            name="modelserve-models",
        )
        with _environment({MULTIPROC_ENV: None}):  # its metrics are its own, served on request
            process.start()
        self._started[process.name] = time.monotonic()
        self._model_process = process

    def _start_worker(self, number: int) -> None:
        plan = worker.WorkerPlan(
            number, os.getpid(), self.settings, self._socket_path, self._ready, self._drained
        )
        process = self._context.Process(
            target=worker.run, args=(plan,), name=f"modelserve-worker-{number}"
        )
        environment = {
            MULTIPROC_ENV: str(self._metrics_dir),  # counters summed over workers
            **{name: os.environ.get(name, value) for name, value in WORKER_MALLOC.items()},
        }
        with _environment(environment):
            process.start()
        self._started[process.name] = time.monotonic()
        self._workers[number] = process

    def _watch(self) -> None:
        """Restarts what dies until SIGTERM, then waits for the workers to drain."""
        while not self._stopping or any(p.is_alive() for p in self._workers.values()):
            sentinels = [p.sentinel for p in self._processes()]
            wait(sentinels, timeout=0.5)
            if self._stopping:
                if time.monotonic() > self._stop_deadline():
                    return  # _shut_down kills the workers still there, and says which
                # a worker gone while draining has nothing left to drain
                for number, process in self._workers.items():
                    if not process.is_alive():
                        self._drained[number] = 1
                continue
            model = self._model_process
            if model is not None and not model.is_alive() and self._may_restart(model):
                self._start_model_process()
            for number, process in list(self._workers.items()):
                if not process.is_alive():
                    self._ready[number] = 0
                    self._drained[number] = 0
                    if self._may_restart(process):
                        self._start_worker(number)

    def _may_restart(self, process: SpawnProcess) -> bool:
        """Logs the exit; False (and the server stops, failed) once the process has failed
        to start too often in a row, rather than restart it forever."""
        early = time.monotonic() - self._started[process.name] < EARLY_EXIT_SECONDS
        self._early_exits[process.name] = self._early_exits.get(process.name, 0) + 1 if early else 0
        if self._early_exits[process.name] >= EARLY_EXITS_ALLOWED:
            log.critical(
                "%s exited %d times in a row within %.0f s of its start (code %s): stopping",
                process.name,
                EARLY_EXITS_ALLOWED,
                EARLY_EXIT_SECONDS,
                process.exitcode,
            )
            self.failed = True
            self._stop(signal.SIGTERM, None)
            return False
        log.error("%s exited (code %s): restarting it", process.name, process.exitcode)
        time.sleep(RESTART_PAUSE_SECONDS)
        return True

    def _stop_deadline(self) -> float:
        """When workers still running after a stop are killed: the drain time and a grace."""
        return self._stopped_at + self.settings.drain_seconds + STOP_GRACE_SECONDS

    def _shut_down(self) -> None:
        if not self._stopping:  # leaving on an error: stop now
            self._stopped_at, self._stopping = time.monotonic(), True
        deadline = self._stop_deadline()
        for process in self._workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("%s still running after the drain time: killing it", process.name)
                process.kill()
        model = self._model_process
        if model is not None and model.is_alive():
            model.terminate()
            model.join(STOP_GRACE_SECONDS)
            if model.is_alive():
                log.warning(
                    "%s still running %.0f s after SIGTERM: killing it",
                    model.name,
                    STOP_GRACE_SECONDS,
                )
                model.kill()


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """`os.environ` with `values` (None: unset) while a child is spawned: it starts with a copy
    of the environment, and the supervisor's own stays as it was."""
    saved = {name: os.environ.get(name) for name in values}
    _set_environment(values)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _run_model_process(*args: Any) -> None:
    """The model process's main, imported there: TensorFlow loads in that process only."""
    from service.processes import model_process

    model_process.run(*args)
