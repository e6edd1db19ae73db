"""A front-end worker process: REST and gRPC on the ports every worker shares (SO_REUSEPORT:
the kernel spreads connections over them), parsing, validating and encoding, with the models
in the model process (`ModelProcessLink`). It never imports TensorFlow's runtime."""

from __future__ import annotations

import faulthandler
import logging
import socket
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path

from service.processes.orphans import die_with_parent
from service.settings import Settings

EXIT_STACKS_SECONDS = 5.0  # a worker not gone this long after serving prints its threads' stacks


@dataclass(frozen=True)
class WorkerPlan:
    """What the supervisor tells worker `number` (settings with the ports fixed)."""

    number: int
    parent: int  # the supervisor's pid: the worker stops when it is gone
    settings: Settings
    socket_path: Path  # the model process's
    ready: SynchronizedArray  # type: ignore[type-arg]  # per worker: connected to the models
    drained: SynchronizedArray  # type: ignore[type-arg]  # per worker: idle after SIGTERM


def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to `host`:`port` (0: a free port), as a server listens there."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other workers may bind too (SO_REUSEPORT)."""
    sock = bound_socket(host, port, reuse_port=True)
    sock.listen(2048)
    return sock


def run(plan: WorkerPlan) -> None:
    """The worker's main (a spawned process): serves until SIGTERM, draining first."""
    from service.protos import use_proto_only_tensorflow

    use_proto_only_tensorflow()  # before anything imports a TensorFlow protobuf module
    die_with_parent(plan.parent)

    from service.http.draining_server import run_server
    from service.logs import configure_logging
    from service.metrics import Metrics
    from service.processes.link import ModelProcessLink
    from service.server import ModelServer

    settings = plan.settings
    flags = plan.ready

    def peers_ready() -> bool:
        return all(flags[:])

    def connected(up: bool) -> None:
        flags[plan.number] = int(up)

    def busy_peers() -> list[int]:  # this worker is drained; which are not yet?
        plan.drained[plan.number] = 1
        return [number for number, drained in enumerate(plan.drained[:]) if not drained]

    link = ModelProcessLink(
        plan.socket_path, plan.number, settings.arena_bytes, peers_ready, connected, busy_peers
    )
    server = ModelServer(settings, metrics=Metrics(models=False), models=link)
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as error:
        configure_logging(settings.log_level, settings.log_format)
        logging.getLogger(__name__).critical(
            "worker %d cannot listen on %s:%d: %s", plan.number, settings.host, settings.port, error
        )
        raise SystemExit(3) from None
    try:
        run_server(server, sockets=[sock])
    finally:
        flags[plan.number] = 0
        # served and drained: if something still holds the process (a thread that does not
        # end), its stacks go to the log before the supervisor has to kill it
        faulthandler.dump_traceback_later(EXIT_STACKS_SECONDS)
