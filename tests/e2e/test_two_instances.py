"""Two server processes on one Redis act as one (SPEC §1, issue 8).

Each instance stores in the shared Redis store and hands what the other
instance stores to its own sockets through one subscription per process, so
a socket on A gets a message sent through B live, not at its next heartbeat.
The acceptance checks: concurrent senders on both instances reach every
socket and poller exactly once in each queue's order (on two ports, and
through nginx with ``deploy/nginx.conf``), and a client of a stopped instance
resumes on the other by cursor, missing nothing and getting nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.live_server import LiveServer
from tests.e2e.conftest import E2E_SERVERS
from tests.e2e.test_nginx import behind_shared_nginx, through  # noqa: F401 (a fixture)

pytestmark = pytest.mark.redis

# The instances' heartbeat is 30 s (conftest): a message arriving only by the
# heartbeat's catch-up would show; live delivery must beat it by far.
LIVE_BOUND_SECONDS = 3.0


async def next_message(connection, timeout: float) -> dict:
    """The next frame that is a message (pings are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await connection.recv())
            if frame["type"] != "ping":
                return frame


async def test_a_socket_on_one_instance_gets_what_is_sent_through_the_other(
    shared_two_instances,
):
    a, b = shared_two_instances
    async with connect(a.websocket_url("alice")) as on_a:
        first = json.loads(await on_a.recv())
        assert first["type"] == "connection.established"

        started = time.monotonic()
        sent = await asyncio.to_thread(b.send, "alice", "chat.message", {"n": 1})
        announced = await asyncio.to_thread(
            b.broadcast, "carol", "announcement", {"n": 2}
        )
        received = [
            await next_message(on_a, LIVE_BOUND_SECONDS),
            await next_message(on_a, LIVE_BOUND_SECONDS),
        ]

    assert [frame["id"] for frame in received] == [
        sent["messageId"],
        announced["messageId"],
    ]
    assert time.monotonic() - started < LIVE_BOUND_SECONDS


async def test_a_poller_on_one_instance_sees_what_is_sent_on_the_other(
    shared_two_instances,
):
    a, b = shared_two_instances
    start = await asyncio.to_thread(b.head_cursor, "bob")
    waiting = asyncio.create_task(
        asyncio.to_thread(b.poll, "bob", cursor=start, wait=10)
    )
    await asyncio.sleep(0.5)  # the long poll is parked on B

    started = time.monotonic()
    sent = await asyncio.to_thread(a.send, "bob", "chat.message", {"n": 1})
    page = await waiting

    assert [message["id"] for message in page["messages"]] == [sent["messageId"]]
    assert time.monotonic() - started < LIVE_BOUND_SECONDS
    # The cursor is the cluster's: A reads on from where B left off.
    later = await asyncio.to_thread(a.send, "bob", "chat.message", {"n": 2})
    rest = await asyncio.to_thread(a.poll, "bob", cursor=page["cursor"])
    assert [message["id"] for message in rest["messages"]] == [later["messageId"]]


async def test_status_on_either_instance_counts_the_sockets_of_both(
    shared_two_instances,
):
    a, b = shared_two_instances
    urls = [a.websocket_url("alice"), b.websocket_url("bob"), b.websocket_url("bob")]
    async with (
        connect(urls[0]) as on_a,
        connect(urls[1]) as first_on_b,
        connect(urls[2]) as second_on_b,
    ):
        for connection in (on_a, first_on_b, second_on_b):
            assert (
                json.loads(await connection.recv())["type"] == "connection.established"
            )
        # Each instance reports its figures every 2 s.
        figures = await wait_for_status(a, connections=3)
        assert figures["totalConnections"] >= 3
        assert (await wait_for_status(b, connections=3))["connections"] == 3


async def wait_for_status(server, connections: int, timeout: float = 6.0) -> dict:
    """The websocket figures of `server` once they count `connections`."""
    async with asyncio.timeout(timeout):
        while True:
            status = await asyncio.to_thread(server.status)
            if status["websocket"]["connections"] == connections:
                return status["websocket"]
            await asyncio.sleep(0.2)


# Longer than the store clients' socket timeout (2 s) and its subscription's
# blocking read (1 s): a read timeout that dropped idle connections would show.
QUIET_SECONDS = 3


async def test_an_idle_socket_outlives_the_subscriptions_quiet_reads(
    shared_two_instances, server_kind, redis_url
):
    # Sockets used to idle on channels-redis's 5 s blocking read, and a
    # shorter read timeout closed them with 1011. Now an idle socket waits on
    # its instance's store subscription; the socket stays quiet until Redis
    # reports that subscription quiet for QUIET_SECONDS on the same
    # connection (no reconnect), then gets a message live.
    if server_kind != E2E_SERVERS[0]:
        pytest.skip(f"the idle socket is tested on {E2E_SERVERS[0]} only")
    a, _ = shared_two_instances
    async with connect(a.websocket_url("alice")) as idle:
        assert json.loads(await idle.recv())["type"] == "connection.established"
        subscription = await asyncio.to_thread(
            wait_for_quiet_subscription, redis_url, a.overrides["SYNC_KEY_PREFIX"]
        )
        sent = await asyncio.to_thread(a.send, "alice", "chat.message", {"n": 1})
        assert (await next_message(idle, LIVE_BOUND_SECONDS))["id"] == sent["messageId"]
    print(f"\nsubscription quiet for {subscription['idle']} s on one connection")


def wait_for_quiet_subscription(redis_url: str, prefix: str) -> dict:
    """The instances' subscriptions, once Redis saw each quiet for
    QUIET_SECONDS, each on the connection it had when first seen."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        first_ids: dict[str, str] = {}
        deadline = time.monotonic() + QUIET_SECONDS + LIVE_BOUND_SECONDS
        while time.monotonic() < deadline:
            named = {
                entry["name"]: entry
                for entry in client.client_list()
                if entry["name"].startswith(prefix) and ":wake:" in entry["name"]
            }
            for name, entry in named.items():
                first_id = first_ids.setdefault(name, entry["id"])
                assert entry["id"] == first_id, f"{name} reconnected"
            if named and all(
                int(entry["idle"]) >= QUIET_SECONDS for entry in named.values()
            ):
                return min(named.values(), key=lambda entry: int(entry["idle"]))
            time.sleep(0.25)
        raise AssertionError(f"no quiet subscription of {prefix} in Redis")
    finally:
        client.close()


# Concurrent senders on both instances (issue 8, acceptance) ----------------

SENDS_PER_SENDER = 12
DELIVERY_TIMEOUT = 15.0


@pytest.fixture(params=["direct", "nginx"])
def entry_points(request, server_kind) -> tuple[LiveServer, LiveServer]:
    """Where clients go: A and B on their own ports, or nginx in front of both.

    On the first server kind only: what is under test (the store, the
    subscription, the hub) is the same code on both, and time is short.
    """
    if server_kind != E2E_SERVERS[0]:
        pytest.skip(f"concurrent senders are tested on {E2E_SERVERS[0]} only")
    if request.param == "direct":
        return request.getfixturevalue("shared_two_instances")
    a, _, port = request.getfixturevalue("behind_shared_nginx")
    front = through(a, port)
    return front, front


def send_all(server: LiveServer, user: str, kind: str, label: str) -> list[str]:
    """Send SENDS_PER_SENDER messages one after another; their ids."""
    sent = []
    for n in range(SENDS_PER_SENDER):
        payload = {"sender": label, "n": n}
        if kind == "broadcast":
            body = server.broadcast(user, "soak.news", payload)
        else:
            body = server.send(user, "chat.message", payload)
        sent.append(body["messageId"])
    return sent


async def socket_reads(connection, count: int) -> list[dict]:
    """The next `count` messages, then anything more within a short while."""
    found: list[dict] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while len(found) < count:
                found.append(await next_message(connection, DELIVERY_TIMEOUT))
        async with asyncio.timeout(0.5):  # a repeat would show here
            found.append(await next_message(connection, 0.5))
    return found


async def poll_reads(server: LiveServer, cursor: str, count: int) -> list[dict]:
    """Long polls by cursor until `count` messages came (or the time is up)."""
    found: list[dict] = []
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while len(found) < count and time.monotonic() < deadline:
        page = await asyncio.to_thread(
            server.poll, "alice", cursor=cursor, wait=2, limit=1000
        )
        assert not page["gap"]
        found += page["messages"]
        cursor = page["cursor"]
    rest = await asyncio.to_thread(server.poll, "alice", cursor=cursor)
    return found + rest["messages"]


def by_queue(messages: list[dict]) -> dict[str, list[str]]:
    """Message ids per queue (the user's own, the broadcasts), in order."""
    queues: dict[str, list[str]] = {"user": [], "broadcast": []}
    for message in messages:
        queues["broadcast" if message["userId"] is None else "user"].append(
            message["id"]
        )
    return queues


async def test_concurrent_senders_on_both_instances_reach_every_reader_once_in_order(
    entry_points,
):
    a, b = entry_points
    async with (
        connect(a.websocket_url("alice")) as socket_a,
        connect(b.websocket_url("alice")) as socket_b,
    ):
        for connection in (socket_a, socket_b):  # positions start here
            assert json.loads(await connection.recv())["type"] == (
                "connection.established"
            )
        start = await asyncio.to_thread(a.head_cursor, "alice")
        expected = 4 * SENDS_PER_SENDER
        readers = [
            socket_reads(socket_a, expected),
            socket_reads(socket_b, expected),
            poll_reads(a, start, expected),
            poll_reads(b, start, expected),
        ]
        senders = [
            asyncio.to_thread(send_all, a, "alice", "send", "alice on A"),
            asyncio.to_thread(send_all, b, "alice", "send", "alice on B"),
            asyncio.to_thread(send_all, a, "carol", "broadcast", "carol on A"),
            asyncio.to_thread(send_all, b, "carol", "broadcast", "carol on B"),
        ]
        results = await asyncio.gather(*readers, *senders)
    received, sent = results[:4], results[4:]

    # The store's order of each queue, as one more reader sees it at the end.
    stored = await asyncio.to_thread(a.poll, "alice", cursor=start, limit=1000)
    assert sorted(message["id"] for message in stored["messages"]) == sorted(
        message_id for ids in sent for message_id in ids
    )
    order = by_queue(stored["messages"])
    for messages in received:  # sockets on A and B, pollers on A and B
        assert by_queue(messages) == order


# An instance stops (issue 8, acceptance) ---------------------------------


async def close_code_of(connection) -> int | None:
    """Read until the server closes `connection`; its close code."""
    try:
        async with asyncio.timeout(LIVE_BOUND_SECONDS * 2):
            while True:
                await connection.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_after_sigterm_of_a_its_clients_resume_on_b_missing_nothing(
    two_instances,
):
    a, b = two_instances
    poll_cursor = await asyncio.to_thread(a.head_cursor, "alice")
    async with (
        connect(a.websocket_url("alice")) as on_a,
        connect(b.websocket_url("alice")) as on_b,
    ):
        for connection in (on_a, on_b):
            assert json.loads(await connection.recv())["type"] == (
                "connection.established"
            )
        before = [await asyncio.to_thread(b.send, "alice", "chat.message", {})]
        socket_cursor = (await next_message(on_a, LIVE_BOUND_SECONDS))["cursor"]
        page = await asyncio.to_thread(a.poll, "alice", cursor=poll_cursor)
        assert [m["id"] for m in page["messages"]] == [before[0]["messageId"]]

        await asyncio.to_thread(a.stop)
        assert await close_code_of(on_a) == 1001  # go elsewhere, resume by cursor
        meanwhile = [
            await asyncio.to_thread(b.send, "alice", "chat.message", {"n": 1}),
            await asyncio.to_thread(b.broadcast, "carol", "announcement", {"n": 2}),
            await asyncio.to_thread(b.send, "alice", "chat.message", {"n": 3}),
        ]
        meanwhile_ids = [sent["messageId"] for sent in meanwhile]

        url = b.websocket_url("alice", cursor=socket_cursor)
        async with connect(url) as resumed:
            established = json.loads(await resumed.recv())
            assert established["payload"]["recovered"] is True
            replayed = [await next_message(resumed, LIVE_BOUND_SECONDS) for _ in "123"]
            assert [frame["id"] for frame in replayed] == meanwhile_ids
            with pytest.raises(TimeoutError):  # nothing twice
                await next_message(resumed, 0.5)
        stayed = [await next_message(on_b, LIVE_BOUND_SECONDS) for _ in "0123"]
        assert [frame["id"] for frame in stayed] == [
            before[0]["messageId"],
            *meanwhile_ids,
        ]

    rest = await asyncio.to_thread(b.poll, "alice", cursor=page["cursor"])
    assert [message["id"] for message in rest["messages"]] == meanwhile_ids
    assert not rest["gap"]
