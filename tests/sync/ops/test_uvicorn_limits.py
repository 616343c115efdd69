"""Request heads bounded in bytes and time under uvicorn (httptools; issue 15):
sync/ops/uvicorn_limits.py.

uvicorn's own protocol class, patched as config.asgi patches it, fed bytes
through a transport that keeps what the server writes.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sync.ops.uvicorn_limits import patch_http_protocol

HEAD_LIMIT = 4096
HEAD_TIMEOUT = 0.2
# Longest wait for something that should happen at once, or after the timeout.
EVENT_TIMEOUT = 3.0


class Transport(asyncio.Transport):
    """Keeps what the server writes; set_protocol as a real transport does."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.changed = asyncio.Event()  # something written, or the close
        self.closed = asyncio.Event()
        self.protocol = None

    def get_extra_info(self, name, default=None):
        addresses = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 80)}
        return addresses.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data
        self.changed.set()

    def close(self) -> None:
        self.closed.set()
        self.changed.set()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def get_protocol(self):
        return self.protocol

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        """Reading is driven by the test."""

    def resume_reading(self) -> None:
        """Reading is driven by the test."""

    def answers(self) -> list[int]:
        """The status of every answer written so far."""
        return [
            int(line.split(b" ")[1])
            for line in self.written.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")
        ]


async def app(scope, receive, send) -> None:
    """Reads the body, then answers 200 (after a pause, for /slow)."""
    while (await receive()).get("more_body", False):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(HEAD_TIMEOUT * 2)  # an answer slower than the timeout
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def connect(settings):
    """Opens a connection to a patched HttpToolsProtocol serving `app`."""
    settings.SYNC = {
        **settings.SYNC,
        "MAX_REQUEST_HEAD_BYTES": HEAD_LIMIT,
        "REQUEST_HEAD_TIMEOUT": HEAD_TIMEOUT,
    }
    patch_http_protocol(HttpToolsProtocol)
    config = Config(app=app, http="httptools", ws="none", log_config=None)

    def open_connection() -> tuple[HttpToolsProtocol, Transport]:
        protocol = HttpToolsProtocol(
            config, ServerState(), {}, _loop=asyncio.get_running_loop()
        )
        transport = Transport()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return protocol, transport

    return open_connection


async def answered(transport: Transport, count: int = 1) -> list[int]:
    """The statuses once `count` answers are written (or the connection closes)."""
    async with asyncio.timeout(EVENT_TIMEOUT):
        while len(transport.answers()) < count and not transport.is_closing():
            transport.changed.clear()
            await transport.changed.wait()
    return transport.answers()


def request(path: str = "/", padding: int = 0, body: bytes = b"") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: example.com\r\n"
    if padding:
        head += f"X-Padding: {'p' * padding}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def test_a_head_past_the_limit_is_refused_with_431(connect):
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Huge: ")
    for _ in range(HEAD_LIMIT // 1000 + 1):
        protocol.data_received(b"a" * 1000)

    assert await answered(transport) == [431]
    assert transport.is_closing()
    body = json.loads(transport.written.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "headers_too_large"
    assert body["error"]["details"] == {"limit": HEAD_LIMIT}


async def test_a_head_under_the_limit_is_served_however_it_is_split(connect):
    protocol, transport = connect()
    data = request(padding=HEAD_LIMIT - 100)
    for start in range(0, len(data), 7):
        protocol.data_received(data[start : start + 7])

    assert await answered(transport) == [200]


async def test_a_small_head_and_a_large_body_in_one_read_are_served(connect):
    protocol, transport = connect()
    protocol.data_received(request(body=b"b" * (HEAD_LIMIT * 4)))

    assert await answered(transport) == [200]


async def test_each_head_on_a_kept_alive_connection_is_bounded(connect):
    protocol, transport = connect()
    protocol.data_received(request())
    await answered(transport)
    protocol.data_received(request(padding=HEAD_LIMIT // 2))
    await answered(transport, 2)
    protocol.data_received(request(padding=HEAD_LIMIT * 2))

    assert await answered(transport, 3) == [200, 200, 431]


async def test_an_unfinished_head_is_answered_408_after_the_timeout(connect):
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Slow: ")

    async with asyncio.timeout(EVENT_TIMEOUT):
        await transport.closed.wait()
    assert transport.answers() == [408]


async def test_a_slow_head_after_an_answer_is_answered_408(connect):
    protocol, transport = connect()
    protocol.data_received(request())
    await answered(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\n")

    async with asyncio.timeout(EVENT_TIMEOUT):
        await transport.closed.wait()
    assert transport.answers() == [200, 408]


async def test_an_idle_connection_is_closed_without_an_answer(connect):
    _, transport = connect()

    async with asyncio.timeout(EVENT_TIMEOUT):
        await transport.closed.wait()
    assert transport.written == b""


async def test_an_answer_slower_than_the_timeout_is_not_cut(connect):
    protocol, transport = connect()
    protocol.data_received(request("/slow"))

    assert await answered(transport) == [200]
    assert not transport.is_closing()


async def test_a_closed_connection_leaves_no_timer(connect):
    protocol, _ = connect()
    protocol.data_received(b"GET / HT")
    protocol.connection_lost(None)

    assert protocol._sync_head_timer is None
