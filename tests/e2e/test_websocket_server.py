"""The WebSocket endpoint (SPEC §3, §5) served by a real daphne process.

Clients are real sockets (the ``websockets`` library) talking to daphne over
TCP; messages are published through the HTTP API, as an application would.
HTTP calls run in a thread so the sockets keep reading meanwhile. Timings are
printed (``pytest -s``) and asserted with room for a loaded 2-core CI machine.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import itertools
import json
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.live_server import HOST
from tests.contract import MESSAGE_KEYS

pytestmark = pytest.mark.e2e

# SPEC §1 default SYNC_MAX_PAYLOAD_BYTES; a frame may be 4096 bytes bigger (§5).
MAX_PAYLOAD_BYTES = 65536
FRAME_LIMIT = MAX_PAYLOAD_BYTES + 4096
# Longest wait for a frame that should come at once (a loaded CI machine).
FRAME_TIMEOUT = 5.0
# Longest wait for the server to notice a socket has gone.
NOTICE_TIMEOUT = 3.0
CROWD = 200
# Handshakes in flight at once: daphne listens with a backlog of 50.
CONNECT_CONCURRENCY = 25
CROWD_DELIVERY_BOUND = 10.0
HEARTBEAT_ENV = {"SYNC_HEARTBEAT_INTERVAL": "1"}


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking HTTP helper in a thread, so open sockets keep reading."""
    return await asyncio.to_thread(function, *args, **kwargs)


class Socket:
    """A client connection, its ``connection.established`` payload, JSON frames."""

    def __init__(self, connection: ClientConnection, established: dict[str, Any]):
        self.connection = connection
        self.established = established

    async def receive(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """The next frame, whatever its type."""
        async with asyncio.timeout(timeout):
            return json.loads(await self.connection.recv())

    async def next_message(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """The next frame that is not a heartbeat ping."""
        while (frame := await self.receive(timeout))["type"] == "ping":
            pass
        return frame

    async def messages(self, count: int) -> list[dict[str, Any]]:
        """The next `count` frames that are not heartbeat pings."""
        return [await self.next_message() for _ in range(count)]

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON text frame."""
        await self.connection.send(json.dumps(frame))

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame; return the server's next (non-ping) frame."""
        await self.send(frame)
        return await self.next_message()

    async def close_code(self, timeout: float = FRAME_TIMEOUT) -> int | None:
        """Read until the server closes; return its close code."""
        await closed_with(self.connection, timeout)
        return self.connection.close_code

    def vanish(self, reset: bool = False) -> None:
        """Drop the TCP connection without a close frame (`reset`: with RST)."""
        if reset:
            raw = self.connection.transport.get_extra_info("socket")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.transport.abort()


async def closed_with(
    connection: ClientConnection, timeout: float = FRAME_TIMEOUT
) -> list[dict[str, Any]]:
    """Read until the server closes the connection; return the frames read."""
    frames = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                frames.append(json.loads(await connection.recv()))
        except ConnectionClosed:
            return frames


def open_connection(url: str, origin: str | None = None, headers=None):
    """A `websockets` connect call: no proxy, compression or protocol pings."""
    return connect(
        url,
        origin=origin,
        additional_headers=headers,
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
    )


class Sockets:
    """Opens client sockets for one test and closes whatever is left after it."""

    def __init__(self) -> None:
        self.opened: list[ClientConnection] = []

    async def connect(
        self, url: str, origin: str | None = None, headers=None
    ) -> ClientConnection:
        """Complete the handshake to `url`; no frame is read."""
        connection = await open_connection(url, origin, headers)
        self.opened.append(connection)
        return connection

    async def open(self, server, user: str, origin=None, **params: Any) -> Socket:
        """Connect as `user` by ``?token=``; read ``connection.established``."""
        connection = await self.connect(server.websocket_url(user, **params), origin)
        async with asyncio.timeout(FRAME_TIMEOUT):
            first = json.loads(await connection.recv())
        assert first["type"] == "connection.established", first
        return Socket(connection, first["payload"])

    async def close_all(self) -> None:
        """Close every socket still open."""
        await asyncio.gather(
            *(connection.close() for connection in self.opened),
            return_exceptions=True,
        )


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    """Client sockets, closed at the end of the test."""
    opened = Sockets()
    yield opened
    await opened.close_all()


@pytest.fixture(scope="module")
def heartbeat_server(asgi_server):
    """A server pinging every second (SYNC_HEARTBEAT_INTERVAL=1)."""
    return asgi_server(**HEARTBEAT_ENV)


def ids(messages: list[dict[str, Any]]) -> list[str]:
    """The message ids, in order."""
    return [message["id"] for message in messages]


def message_frame(text: str, size: int | None = None, **fields: Any) -> str:
    """A chat.message frame; padded in the payload to `size` bytes if given."""
    frame = {"type": "chat.message", "payload": {"text": text}, **fields}
    encoded = json.dumps(frame)
    if size is not None:
        frame["payload"]["text"] += "a" * (size - len(encoded))
        encoded = json.dumps(frame)
        assert len(encoded) == size
    return encoded


def open_half_open_socket(server, user: str) -> socket.socket:
    """Shake hands by hand, then never read or write: a client whose network died.

    Returns once ``connection.established`` has arrived; the caller closes it.
    """
    raw = socket.create_connection((HOST, server.port), timeout=FRAME_TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws?token={server.tokens[user]} HTTP/1.1\r\n"
            f"Host: {HOST}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"connection.established" not in received:
        chunk = raw.recv(4096)
        assert chunk, f"the server closed the handshake: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 101"), received
    return raw


async def wait_for_status(
    server, connections: int, subscriptions: int, timeout: float = NOTICE_TIMEOUT
) -> dict:
    """The status once it shows these counts, or the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        websocket = (await call(server.status))["websocket"]
        counts = (websocket["connections"], websocket["subscriptions"])
        if counts == (connections, subscriptions) or time.monotonic() > deadline:
            return websocket
        await asyncio.sleep(0.1)


# Delivery (SPEC §3) -------------------------------------------------------------


async def test_every_tab_of_the_sender_gets_its_messages_and_no_one_else(
    server, sockets
):
    first_tab = await sockets.open(server, "alice")
    second_tab = await sockets.open(server, "alice")
    bob = await sockets.open(server, "bob")

    by_http = await call(server.send, "alice", "chat.message", {"text": "by http"})
    http_copies = [await tab.next_message() for tab in (first_tab, second_tab)]
    await first_tab.connection.send(message_frame("by websocket", id="frame-1"))
    ack = await first_tab.next_message()
    own_copy = await first_tab.next_message()
    other_copy = await second_tab.next_message()
    # bob's next message is his own: nothing of alice's came before it.
    fence = await call(server.send, "bob", "chat.message", {"text": "bob's own"})
    bobs_first = await bob.next_message()

    assert http_copies[0] == http_copies[1]
    assert set(http_copies[0]) == MESSAGE_KEYS
    assert http_copies[0]["id"] == by_http["messageId"]
    assert http_copies[0]["payload"] == {"text": "by http"}
    assert http_copies[0]["userId"] == first_tab.established["userId"]
    assert ack["type"] == "ack"
    assert ack["correlationId"] == "frame-1"
    assert own_copy == other_copy
    assert own_copy["id"] == ack["payload"]["messageId"]
    assert own_copy["timestamp"] == ack["payload"]["timestamp"]
    assert (own_copy["type"], own_copy["payload"]) == (
        "chat.message",
        {"text": "by websocket"},
    )
    assert own_copy["userId"] == first_tab.established["userId"]
    assert own_copy["cursor"] != http_copies[0]["cursor"]
    assert bobs_first["id"] == fence["messageId"]
    assert bob.established["userId"] != first_tab.established["userId"]
    # A tab falling back to polling from its connection cursor sees the same.
    page = await call(server.poll, "alice", cursor=second_tab.established["cursor"])
    assert page["messages"] == [http_copies[1], other_copy]


async def test_topic_broadcast_reaches_only_subscribers_and_plain_one_everyone(
    server, sockets
):
    by_query = await sockets.open(server, "alice", topics="ops,billing")
    by_frame = await sockets.open(server, "bob")
    subscribed = await by_frame.request(
        {"type": "subscribe", "payload": {"topics": ["ops"]}, "id": "sub-1"}
    )
    other_topic = await sockets.open(server, "alice", topics="sales")
    no_topics = await sockets.open(server, "bob")

    ops = await call(server.broadcast, "carol", "announcement", {"n": 1}, ["ops"])
    everyone = await call(server.broadcast, "carol", "announcement", {"n": 2})

    assert subscribed == {
        "type": "subscribed",
        "payload": {"topics": ["ops"]},
        "correlationId": "sub-1",
    }
    for subscriber in (by_query, by_frame):
        received = await subscriber.messages(2)
        assert ids(received) == [ops["messageId"], everyone["messageId"]]
        assert (received[0]["topics"], received[0]["userId"]) == (["ops"], None)
        assert (received[1]["topics"], received[1]["userId"]) == ([], None)
    for bystander in (other_topic, no_topics):
        assert (await bystander.next_message())["id"] == everyone["messageId"]


async def test_unsubscribed_socket_no_longer_receives_the_topic(server, sockets):
    listener = await sockets.open(server, "bob", topics="ops")
    unsubscribed = await listener.request(
        {"type": "unsubscribe", "payload": {"topics": ["ops"]}, "id": "unsub-1"}
    )
    await call(server.broadcast, "carol", "announcement", {"n": 1}, ["ops"])
    everyone = await call(server.broadcast, "carol", "announcement", {"n": 2})

    assert unsubscribed == {
        "type": "unsubscribed",
        "payload": {"topics": []},
        "correlationId": "unsub-1",
    }
    assert (await listener.next_message())["id"] == everyone["messageId"]


# Heartbeat (SPEC §5) ------------------------------------------------------------


async def test_server_pings_every_second_and_a_client_answering_stays_open(
    heartbeat_server, sockets
):
    client = await sockets.open(heartbeat_server, "alice")
    arrivals = []
    started = time.monotonic()
    while len(arrivals) < 3:
        frame = await client.receive(timeout=3)
        assert set(frame) == {"type", "timestamp"}, frame
        assert frame["type"] == "ping", frame
        assert abs(frame["timestamp"] - time.time() * 1000) < 5000
        arrivals.append(time.monotonic())
        await client.send({"type": "pong"})
    # Three intervals have passed, more than the two that close a silent socket.
    pong = await client.request({"type": "ping", "id": "still-there"})

    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    print(
        f"\npings after {arrivals[0] - started:.2f} s, then every "
        + ", ".join(f"{gap:.2f}" for gap in gaps)
        + " s"
    )
    assert client.established["heartbeatInterval"] == 1000
    assert 0.5 < arrivals[0] - started < 1.6
    assert all(0.5 < gap < 1.6 for gap in gaps)
    assert (pong["type"], pong["correlationId"]) == ("pong", "still-there")


async def test_client_sending_its_own_frames_stays_open_without_answering_pings(
    heartbeat_server, sockets
):
    client = await sockets.open(heartbeat_server, "alice")
    deadline = time.monotonic() + 3.2
    answers = []
    while time.monotonic() < deadline:
        await client.send({"type": "ping", "id": len(answers)})
        while (frame := await client.receive(timeout=3))["type"] != "pong":
            pass
        answers.append(frame["correlationId"])
        await asyncio.sleep(0.5)

    assert answers == list(range(len(answers)))
    assert len(answers) >= 5
    assert client.connection.close_code is None


async def test_silent_client_is_closed_with_4408_after_two_intervals(
    heartbeat_server, sockets
):
    client = await sockets.open(heartbeat_server, "alice")
    started = time.monotonic()
    frames = await closed_with(client.connection, timeout=4.0)
    elapsed = time.monotonic() - started

    print(f"\nsilent client closed after {elapsed:.2f} s")
    assert client.connection.close_code == 4408
    assert {frame["type"] for frame in frames} == {"ping"}
    assert 1.5 < elapsed < 4.0


# Resume and transport switch (SPEC §4, §5) ----------------------------------------


async def test_reconnect_with_cursor_replays_exactly_the_missed_messages(
    server, sockets
):
    before = await sockets.open(server, "alice")
    seen = [
        (await call(server.send, "alice", "chat.message", {"n": n}))["messageId"]
        for n in (1, 2)
    ]
    received = await before.messages(2)
    await before.connection.close()

    missed = [
        (await call(server.send, "alice", "chat.message", {"n": 3}))["messageId"],
        (await call(server.broadcast, "carol", "announcement", {"n": 4}))["messageId"],
    ]
    await call(server.send, "bob", "chat.message", {"text": "not for alice"})
    missed.append(
        (await call(server.send, "alice", "chat.message", {"n": 5}))["messageId"]
    )
    after = await sockets.open(server, "alice", cursor=received[-1]["cursor"])
    replayed = await after.messages(3)
    live = await call(server.send, "alice", "chat.message", {"n": 6})
    next_one = await after.next_message()

    assert before.established["recovered"] is None
    assert ids(received) == seen
    assert after.established["recovered"] is True
    assert ids(replayed) == missed
    assert after.established["cursor"] == replayed[-1]["cursor"]
    # The live message comes right after the replay: no duplicate in between.
    assert next_one["id"] == live["messageId"]
    page = await call(server.poll, "alice", cursor=next_one["cursor"])
    assert page["messages"] == []


async def test_switching_from_websocket_to_polling_neither_repeats_nor_loses(
    server, sockets
):
    half_reader = await sockets.open(server, "alice")
    full_reader = await sockets.open(server, "alice")
    published = []
    for step in range(6):
        if step == 2:
            sent = await call(server.broadcast, "carol", "announcement", {"n": step})
            # A topic alice does not follow: neither transport delivers it.
            await call(
                server.broadcast, "carol", "announcement", {"n": -1}, ["elsewhere"]
            )
        else:
            sent = await call(server.send, "alice", "chat.message", {"n": step})
        published.append(sent["messageId"])

    first_half = await half_reader.messages(3)
    await half_reader.connection.close()
    everything = await full_reader.messages(6)
    page = await call(server.poll, "alice", cursor=first_half[-1]["cursor"])

    assert ids(everything) == published
    assert first_half == everything[:3]
    assert page["messages"] == everything[3:]
    assert (page["gap"], page["hasMore"]) == (False, False)
    assert (await call(server.poll, "alice", cursor=page["cursor"]))["count"] == 0


async def test_switching_from_polling_to_websocket_resumes_at_the_poll_cursor(
    server, sockets
):
    cursor = await call(server.head_cursor, "alice")
    polled = await call(server.send, "alice", "chat.message", {"n": 1})
    page = await call(server.poll, "alice", cursor=cursor)
    unseen = await call(server.send, "alice", "chat.message", {"n": 2})

    socket = await sockets.open(server, "alice", cursor=page["cursor"])
    replayed = await socket.next_message()
    live = await call(server.send, "alice", "chat.message", {"n": 3})

    assert ids(page["messages"]) == [polled["messageId"]]
    assert socket.established["recovered"] is True
    assert replayed["id"] == unseen["messageId"]
    assert (await socket.next_message())["id"] == live["messageId"]


# Scale and status (SPEC §4, §5) ---------------------------------------------------


async def test_two_hundred_sockets_all_receive_one_broadcast(asgi_server, sockets):
    # One user holds them all: lift the per-user bounds on open sockets and
    # on handshakes per minute.
    server = asgi_server(
        SYNC_WS_MAX_CONNECTIONS_PER_USER=CROWD, SYNC_WS_CONNECT_RATE=f"{CROWD}/1m"
    )
    handshakes = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one() -> Socket:
        async with handshakes:
            return await sockets.open(server, "alice")

    async def receipt(socket: Socket) -> tuple[dict[str, Any], float]:
        message = await socket.next_message(timeout=CROWD_DELIVERY_BOUND + 5)
        return message, time.monotonic()

    started = time.monotonic()
    crowd = await asyncio.gather(*(open_one() for _ in range(CROWD)))
    connected_seconds = time.monotonic() - started
    connections = (await call(server.status))["websocket"]["connections"]
    receipts = [asyncio.create_task(receipt(socket)) for socket in crowd]
    posted_at = time.monotonic()
    sent = await call(server.broadcast, "carol", "announcement", {"to": "crowd"})
    results = await asyncio.gather(*receipts)
    slowest = max(received_at for _, received_at in results) - posted_at

    print(
        f"\n{CROWD} sockets connected in {connected_seconds:.2f} s; the last "
        f"received the broadcast {slowest * 1000:.0f} ms after the POST was issued"
    )
    assert connections >= CROWD
    assert [message["id"] for message, _ in results] == [sent["messageId"]] * CROWD
    assert slowest < CROWD_DELIVERY_BOUND


async def test_status_counts_sockets_and_subscriptions_until_they_are_gone(
    dedicated_asgi_server, sockets
):
    server = dedicated_asgi_server()
    initially = await call(server.status)
    plain = await sockets.open(server, "alice")
    two_topics = await sockets.open(server, "alice", topics="ops,billing")
    by_frame = await sockets.open(server, "bob")
    await by_frame.request({"type": "subscribe", "payload": {"topics": ["sales"]}})
    all_open = (await call(server.status))["websocket"]

    await plain.connection.close()
    after_close = await wait_for_status(server, connections=2, subscriptions=3)
    two_topics.vanish()
    after_abort = await wait_for_status(server, connections=1, subscriptions=1)
    by_frame.vanish(reset=True)
    after_reset = await wait_for_status(server, connections=0, subscriptions=0)

    assert initially["websocket"] == {
        "enabled": True,
        "connections": 0,
        "totalConnections": 0,
        "subscriptions": 0,
    }
    assert all_open == {
        "enabled": True,
        "connections": 3,
        "totalConnections": 3,
        "subscriptions": 3,
    }
    assert (after_close["connections"], after_close["subscriptions"]) == (2, 3)
    assert (after_abort["connections"], after_abort["subscriptions"]) == (1, 1)
    assert (after_reset["connections"], after_reset["subscriptions"]) == (0, 0)
    assert after_reset["totalConnections"] == 3


async def test_client_whose_network_died_is_dropped_after_two_silent_intervals(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(**HEARTBEAT_ENV)
    half_open = await call(open_half_open_socket, server, "alice")
    started = time.monotonic()
    try:
        while_open = (await call(server.status))["websocket"]
        # 4408 after two silent seconds, then the close handshake times out.
        after = await wait_for_status(server, connections=0, subscriptions=0, timeout=6)
        dropped_after = time.monotonic() - started
    finally:
        half_open.close()

    print(f"\nhalf-open socket dropped after {dropped_after:.2f} s")
    assert while_open["connections"] == 1
    assert after["connections"] == 0
    assert 1.5 < dropped_after < 6.0


# Server shutdown, configuration and handshake checks (SPEC §1, §5) ---------------


async def test_sigterm_closes_open_sockets_with_1001_and_daphne_exits_cleanly(
    dedicated_asgi_server, sockets
):
    server = dedicated_asgi_server()
    alices = await sockets.open(server, "alice")
    bobs = await sockets.open(server, "bob")
    # A browser also holds an idle keep-alive HTTP connection to the server.
    keep_alive = http.client.HTTPConnection(HOST, server.port, timeout=5)
    keep_alive.request("GET", "/api/sync/status", headers=server.auth_headers("bob"))
    assert keep_alive.getresponse().read()

    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(alices.close_code(), bobs.close_code())
    closed_after = time.monotonic() - signalled_at
    exit_code = await call(server.process.wait, 10)
    exited_after = time.monotonic() - signalled_at
    keep_alive.close()

    print(
        f"\nSIGTERM: sockets closed after {closed_after:.2f} s, daphne exited "
        f"after {exited_after:.2f} s"
    )
    assert codes == [1001, 1001], server.log()
    assert server.exited_cleanly(exit_code), server.log()
    assert exited_after < 5.0
    assert "Traceback" not in server.log()


async def test_sigterm_during_a_long_poll_still_exits_cleanly(
    dedicated_asgi_server, sockets
):
    server = dedicated_asgi_server()
    socket_tab = await sockets.open(server, "alice")
    cursor = await call(server.head_cursor, "bob")
    # A tab on the polling fallback, waiting for its next message.
    long_poll = server.start_request(
        "GET", f"/api/sync/poll?cursor={cursor}&wait=20", user="bob"
    )
    await asyncio.sleep(0.5)

    server.process.send_signal(signal.SIGTERM)
    code = await socket_tab.close_code()
    exit_code = await call(server.process.wait, 10)
    long_poll.close()

    assert code == 1001
    assert server.exited_cleanly(exit_code), server.log()[-2000:]
    assert "Fatal Python error" not in server.log()


async def test_with_websocket_disabled_the_handshake_is_refused_but_polling_works(
    asgi_server,
):
    server = asgi_server(SYNC_WEBSOCKET_ENABLED="false")
    with pytest.raises(InvalidStatus) as refused:
        async with open_connection(server.websocket_url("alice")):
            pass
    cursor = await call(server.head_cursor, "alice")
    sent = await call(server.send, "alice", "chat.message", {"text": "by polling"})
    page = await call(server.poll, "alice", cursor=cursor)
    status = await call(server.status)

    assert refused.value.response.status_code == 403
    assert ids(page["messages"]) == [sent["messageId"]]
    assert status["websocket"]["enabled"] is False
    assert status["polling"]["enabled"] is True


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://localhost.evil.example", "null"],
)
async def test_foreign_origin_is_refused_with_403(server, sockets, origin):
    with pytest.raises(InvalidStatus) as refused:
        await sockets.connect(server.websocket_url("alice"), origin=origin)

    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("origin", ["localhost", None], ids=["own-origin", "none"])
async def test_own_origin_or_none_is_accepted(server, sockets, origin):
    if origin is not None:
        origin = f"http://{origin}:{server.port}"
    socket = await sockets.open(server, "alice", origin=origin)

    assert socket.established["connectionId"]
    pong = await socket.request({"type": "ping", "id": 1})
    assert (pong["type"], pong["correlationId"]) == ("pong", 1)


async def test_browser_session_opens_a_socket_from_its_own_origin_only(server, sockets):
    cookie = {"Cookie": await call(server.session_cookie, "alice")}
    by_token = await sockets.open(server, "alice")
    own_page = await sockets.connect(
        server.ws_url, origin=f"http://localhost:{server.port}", headers=cookie
    )
    async with asyncio.timeout(FRAME_TIMEOUT):
        established = json.loads(await own_page.recv())
    # Another site's page cannot borrow alice's cookie to open her socket.
    with pytest.raises(InvalidStatus) as refused:
        await sockets.connect(
            server.ws_url, origin="http://evil.example", headers=cookie
        )

    assert established["type"] == "connection.established"
    assert established["payload"]["userId"] == by_token.established["userId"]
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("token", [None, "not-a-real-key"], ids=["none", "bad"])
async def test_unauthenticated_socket_is_closed_with_4401(server, sockets, token):
    url = server.ws_url if token is None else f"{server.ws_url}?token={token}"
    connection = await sockets.connect(url)
    frames = await closed_with(connection)

    assert frames == []
    assert connection.close_code == 4401


async def test_frame_over_the_limit_is_closed_with_1009(server, sockets):
    client = await sockets.open(server, "alice")
    at_limit = message_frame("", size=FRAME_LIMIT, id="at-limit")
    await client.connection.send(at_limit)
    error = await client.next_message()
    await client.connection.send(message_frame("", size=FRAME_LIMIT + 1))
    code = await client.close_code()

    # The largest frame allowed is answered (its payload is too big) and the
    # connection stays open; one byte more ends it.
    assert error["type"] == "error"
    assert error["payload"]["code"] == "payload_too_large"
    assert error["correlationId"] == "at-limit"
    assert code == 1009
    assert server.process.poll() is None
