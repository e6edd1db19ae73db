"""uvicorn's server, draining on SIGTERM/Ctrl-C before it stops (uvicorn alone closes its socket
at once and answers requests still running at its timeout with a plain-text 500). The first
signal starts the REST drain (service.http.lifecycle) and the gRPC one; uvicorn shuts down once
no request is left or the drain time is up. A second signal stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from service.server import ModelServer

log = logging.getLogger(__name__)

# uvicorn's timeout_graceful_shutdown after the drain: requests still left are cancelled (503)
CLOSE_GRACE_SECONDS = 1


def run_server(server: ModelServer, sockets: list[socket.socket] | None = None) -> None:
    """Serves `server` (REST on its settings' host and port, or on `sockets`) until SIGTERM."""
    from service.http.app import asgi_app
    from service.http.limits import uvicorn_config
    from service.logs import configure_logging
    from service.tls import uvicorn_tls_options

    settings = server.settings
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn_config(  # with the header, timeout and connection limits
        server,
        asgi_app(server),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's handler and format
        access_log=False,  # modelserve writes its own (service.observer)
        timeout_graceful_shutdown=CLOSE_GRACE_SECONDS,  # after DrainingServer's own drain
        server_header=False,  # no software and version for scanners
        **uvicorn_tls_options(settings),  # HTTPS with tls_cert_file / tls_key_file
    )
    DrainingServer(config, server).run(sockets=sockets)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, server: ModelServer) -> None:
        super().__init__(config)
        self.server = server
        self.lifecycle = server.lifecycle
        self.drain_seconds = server.settings.drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: Future[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Not uvicorn's, which re-raises the signal after shutdown: a drain exits with 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.lifecycle.draining or self._loop is None:  # a second signal, or still starting
            super().handle_exit(sig, frame)
            return
        log.info(
            "%s: draining (up to %s s): readiness 503, new requests refused",
            signal.Signals(sig).name,
            self.drain_seconds,
        )
        self.server.begin_drain()  # REST and gRPC at the same time
        # a signal handler runs between two steps of the event loop: schedule, don't await
        self._drain = asyncio.run_coroutine_threadsafe(self._drain_then_stop(sig), self._loop)

    async def _drain_then_stop(self, sig: int) -> None:
        deadline = time.monotonic() + self.drain_seconds
        if not await self.lifecycle.wait_idle(self.drain_seconds):
            log.warning(
                "drain time (%s s) is up with %d request(s) in flight: they are answered 503",
                self.drain_seconds,
                self.lifecycle.in_flight,
            )
        # With workers sharing the port, one that closed its socket early would drop the
        # connections the kernel had already queued on it: close together, once all are idle.
        await self.server.peers_drained(deadline)
        super().handle_exit(sig, None)  # uvicorn: close the socket, stop
