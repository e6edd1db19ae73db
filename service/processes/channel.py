"""One end of a worker's Unix socket to the model process: whole messages in
(`service.processes.protocol`), several to a read; messages out written together once per
turn of the event loop (one system call for all the answers a batch gives, not one each)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from service.processes.protocol import Message
from service.processes.wire import LENGTH, decode, encode


class Channel(asyncio.Protocol):
    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        received = self._received
        received += data
        start = 0
        while len(received) - start >= LENGTH.size:
            (length,) = LENGTH.unpack_from(received, start)
            end = start + LENGTH.size + length
            if len(received) < end:
                break
            message = decode(memoryview(received)[start + LENGTH.size : end])
            start = end
            self.on_message(message)
        del received[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost(exc)

    def send(self, message: Message) -> None:
        if self.transport is None:
            return  # gone: whoever waits for an answer is told by on_lost
        self._outgoing.append(encode(message))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and self._outgoing:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()
