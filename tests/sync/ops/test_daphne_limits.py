"""Request heads and bodies bounded under daphne (sync/ops/daphne_limits.py).

daphne's channel, as config.asgi makes daphne build it, fed bytes through
twisted's in-memory transport, with a clock the test moves.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from sync.core.validation import max_body_bytes
from sync.http.body_limits import LINGER_BYTES, LINGER_SECONDS
from sync.ops.daphne_limits import BoundedHTTPChannel, BoundedWebRequest

HEAD_LIMIT = 4096
HEAD_TIMEOUT = 5
PAGE_LIMIT = 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE by default


class Server:
    """What daphne's request asks of its server; records the applications."""

    root_path = ""
    proxy_forwarded_address_header = None
    request_buffer_size = 8192

    def __init__(self) -> None:
        self.scopes: list[dict] = []
        self.bodies: list[bytes] = []

    def protocol_connected(self, protocol) -> None:
        """Nothing to track here."""

    def protocol_disconnected(self, protocol) -> None:
        """Nothing to track here."""

    def create_application(self, protocol, scope):
        self.scopes.append(scope)
        self.bodies.append(b"")
        server = self

        class Queue:
            def put_nowait(self, message) -> None:
                server.bodies[-1] += message.get("body", b"")

        return Queue()


@pytest.fixture
def connect(settings):
    """Opens a bounded channel on an in-memory transport; returns its parts."""
    settings.SYNC = {
        **settings.SYNC,
        "MAX_REQUEST_HEAD_BYTES": HEAD_LIMIT,
        "REQUEST_HEAD_TIMEOUT": HEAD_TIMEOUT,
    }

    def open_connection():
        clock, server, transport = Clock(), Server(), StringTransport()
        channel = BoundedHTTPChannel()
        channel.requestFactory = BoundedWebRequest
        channel.factory = SimpleNamespace(server=server)
        channel.callLater = clock.callLater
        channel.makeConnection(transport)
        return SimpleNamespace(
            channel=channel, clock=clock, server=server, transport=transport
        )

    return open_connection


def status(transport: StringTransport) -> int | None:
    written = transport.value()
    return int(written.split(b" ", 2)[1]) if written else None


def error_code(transport: StringTransport) -> str:
    return json.loads(transport.value().partition(b"\r\n\r\n")[2])["error"]["code"]


def post(path: str, length: int | None) -> bytes:
    framing = (
        "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    )
    return f"POST {path} HTTP/1.1\r\nHost: example.com\r\n{framing}\r\n\r\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/accounts/login/", PAGE_LIMIT), ("/api", None), ("/api/sync/send", None)],
)
def test_a_declared_body_over_its_routes_limit_is_refused_unread(connect, path, limit):
    limit = limit or max_body_bytes()
    connection = connect()
    connection.channel.dataReceived(post(path, limit + 1) + b"a" * 1000)
    answered_at_once = status(connection.transport)
    connection.channel.dataReceived(b"a" * limit)  # the rest: dropped

    assert answered_at_once == 413
    assert error_code(connection.transport) == "payload_too_large"
    assert connection.channel.requests[-1].content is None  # nothing spooled
    assert connection.transport.disconnecting  # closed once the body ended
    assert connection.server.scopes == []


def test_a_refused_body_is_dropped_for_a_bounded_while(connect):
    endless, slow = connect(), connect()
    for connection in (endless, slow):
        connection.channel.dataReceived(post("/api", 10 * LINGER_BYTES))
    piece = b"a" * 65536
    for _ in range(LINGER_BYTES // len(piece) + 1):
        endless.channel.dataReceived(piece)
    slow.clock.advance(LINGER_SECONDS)

    assert status(endless.transport) == status(slow.transport) == 413
    assert endless.transport.disconnecting
    assert slow.transport.disconnecting


def test_a_chunked_body_is_refused_once_its_chunks_pass_the_limit(connect):
    connection = connect()
    connection.channel.dataReceived(post("/api", None))
    piece = b"a" * 8192
    sent = 0
    while status(connection.transport) is None:
        connection.channel.dataReceived(chunk(piece))
        sent += len(piece)
    connection.channel.dataReceived(chunk(piece) + b"0\r\n\r\n")

    assert status(connection.transport) == 413
    assert sent == (max_body_bytes() // len(piece) + 1) * len(piece)
    assert connection.transport.disconnecting  # closed once the body ended
    assert connection.server.scopes == []


def test_a_body_within_the_limit_reaches_the_application(connect):
    connection = connect()
    body = b"a" * 10_000
    connection.channel.dataReceived(post("/api", None) + chunk(body) + b"0\r\n\r\n")

    assert [scope["path"] for scope in connection.server.scopes] == ["/api"]
    assert connection.server.bodies == [body]


def test_a_header_line_past_the_limit_is_refused_with_431(connect):
    connection = connect()
    connection.channel.dataReceived(b"GET / HTTP/1.1\r\nX-Huge: " + b"a" * HEAD_LIMIT)

    assert status(connection.transport) == 431
    assert error_code(connection.transport) == "headers_too_large"
    assert connection.transport.disconnecting


def test_headers_past_the_limit_in_all_are_refused(connect):
    connection = connect()
    header = b"X-Some: " + b"a" * 1000 + b"\r\n"
    connection.channel.dataReceived(b"GET / HTTP/1.1\r\n" + header * 5)

    assert status(connection.transport) == 400  # twisted's own answer
    assert connection.transport.disconnecting


def test_an_unfinished_head_is_answered_408_after_the_timeout(connect):
    connection = connect()
    connection.channel.dataReceived(b"GET / HTTP/1.1\r\nX-Slow: a")
    connection.clock.advance(HEAD_TIMEOUT - 0.1)
    connection.channel.dataReceived(b"a")  # a byte now and then changes nothing
    connection.clock.advance(0.1)

    assert status(connection.transport) == 408
    assert error_code(connection.transport) == "request_timeout"
    assert connection.transport.disconnecting


def test_an_idle_connection_is_closed_without_an_answer(connect):
    connection = connect()
    connection.clock.advance(HEAD_TIMEOUT)

    assert connection.transport.value() == b""
    assert connection.transport.disconnecting


def test_a_complete_head_stops_the_timer(connect):
    connection = connect()
    connection.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    connection.clock.advance(HEAD_TIMEOUT * 2)

    assert len(connection.server.scopes) == 1
    assert not connection.transport.disconnecting
    assert connection.clock.getDelayedCalls() == []
