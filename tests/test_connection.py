"""What the HTTP protocol gives each request (service.http.connection): its response in one
send, heads without a body still sent at once, and a disconnect notice; each through a real
server on a raw socket, where the order and framing of the bytes can be seen."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from service.http.connection import DisconnectNotice, ResponseTransport
from service.settings import Settings
from tests.saved_models import export_affine
from tests.server import running_server

PREDICT = json.dumps({"instances": [1.0, 2.0]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("connection")
    export_affine(repo, "plus", 1)
    with running_server(Settings(model_base_path=repo)) as url:
        yield url


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def predict_request() -> bytes:
    return (
        f"POST /v1/models/plus:predict HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(PREDICT)}\r\n\r\n"
    ).encode() + PREDICT


def read_response(conn: socket.socket, buffer: bytearray, *, head_only: bool = False) -> bytes:
    """One whole response from `conn` (by its Content-Length), the bytes after it left in
    `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before a whole head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    size = len(head) + 4 + (0 if head_only else length)
    while len(buffer) < size:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed mid-body: {bytes(buffer)!r}"
        buffer += chunk
    response = bytes(buffer[:size])
    del buffer[:size]
    return response


def test_a_response_arrives_whole_and_the_connection_goes_on(server: str) -> None:
    with connect(server) as conn:
        buffer = bytearray()
        for _ in range(3):  # keep-alive: each response whole, nothing left over
            conn.sendall(predict_request())
            response = read_response(conn, buffer)
            assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
            assert response.endswith(b'{"predictions":[2.5,3.0]}'), response
            assert not buffer


def test_a_head_without_a_body_is_sent_at_once(server: str) -> None:
    """HEAD: the head is all there is, and it is not held back waiting for a body; the next
    request on the connection is answered after it."""
    with connect(server) as conn:
        buffer = bytearray()
        conn.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        head = read_response(conn, buffer, head_only=True)
        assert head.startswith(b"HTTP/1.1 200 "), head  # the probe's head, without its body
        assert b"content-length:" in head.lower(), head
        conn.sendall(predict_request())
        assert read_response(conn, buffer).endswith(b'{"predictions":[2.5,3.0]}')


def test_expect_100_continue_is_answered_before_the_response(server: str) -> None:
    """The interim `100 Continue` is written before the response starts: it is never taken
    for the response's head."""
    head = (
        f"POST /v1/models/plus:predict HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(PREDICT)}\r\n\r\n"
    ).encode()
    with connect(server) as conn:
        conn.sendall(head)
        interim = conn.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        conn.sendall(PREDICT)
        response = read_response(conn, bytearray())
        assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
        assert response.endswith(b'{"predictions":[2.5,3.0]}'), response


def test_pipelined_requests_are_answered_in_order(server: str) -> None:
    bad = b'{"instances": "nope"}'
    second = (
        f"POST /v1/models/plus:predict HTTP/1.1\r\nHost: test\r\nContent-Length: {len(bad)}\r\n\r\n"
    ).encode() + bad
    with connect(server) as conn:
        conn.sendall(predict_request() + second + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        buffer = bytearray()
        first, answer, health = (read_response(conn, buffer) for _ in range(3))
    assert first.endswith(b'{"predictions":[2.5,3.0]}'), first
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"instances" in answer
    assert health.startswith(b"HTTP/1.1 200 OK\r\n"), health


class _CountingTransport(asyncio.Transport):
    """A real loopback transport's writes, counted on the way."""

    def __init__(self, inner: asyncio.BaseTransport) -> None:
        super().__init__()
        assert isinstance(inner, asyncio.Transport)
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()


Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _loopback_pair() -> tuple[_CountingTransport, Client]:
    """A server-side transport (counted) and the client's streams, over loopback TCP (the
    client holds on to its writer: dropped, it would close the socket)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.BaseTransport] = loop.create_future()

    class Accepting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)

    listener = await loop.create_server(Accepting, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    transport = _CountingTransport(await accepted)
    listener.close()
    return transport, client


def test_the_head_and_the_first_body_piece_go_out_in_one_write() -> None:
    async def scenario() -> None:
        transport, (reader, _writer) = await _loopback_pair()
        cycle = SimpleNamespace(response_started=False)
        response = ResponseTransport(transport, cycle)
        response.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the start: at once
        cycle.response_started = True
        response.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        assert len(transport.writes) == 1  # the head is held for the body
        response.write(b"bo")
        response.write(b"dy")
        assert transport.writes == [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbo",
            b"dy",
        ]
        expected = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"
        assert await reader.readexactly(len(expected)) == expected
        transport.close()

    asyncio.run(scenario())


def test_a_head_alone_goes_out_on_the_next_turn_of_the_loop_or_at_close() -> None:
    """A streamed response whose body is slow to come still shows its head at once."""

    async def scenario() -> None:
        transport, (reader, _writer) = await _loopback_pair()
        response = ResponseTransport(transport, SimpleNamespace(response_started=True))
        response.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert transport.writes == []
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        closing = ResponseTransport(transport, SimpleNamespace(response_started=True))
        closing.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        closing.close()
        assert transport.writes[-1] == b"HTTP/1.1 204 No Content\r\n\r\n"
        assert (await reader.read()).endswith(b"HTTP/1.1 204 No Content\r\n\r\n")

    asyncio.run(scenario())


def test_a_lost_connection_cancels_the_waiting_task_once() -> None:
    async def scenario() -> None:
        notice = DisconnectNotice()
        waiter = asyncio.ensure_future(asyncio.sleep(60))
        notice.waiter = waiter
        notice.connection_lost()
        assert notice.lost
        with pytest.raises(asyncio.CancelledError):
            await waiter
        DisconnectNotice().connection_lost()  # nobody waiting: only noted

    asyncio.run(scenario())
