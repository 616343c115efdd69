"""Two server processes on one Redis act as one (SPEC §1, issue 8, first part).

Each instance stores in the shared Redis store and hands what the other
instance stores to its own sockets through one subscription per process, so
a socket on A gets a message sent through B live, not at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

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
    two_instances,
):
    a, b = two_instances
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
    two_instances,
):
    a, b = two_instances
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


async def test_status_on_either_instance_counts_the_sockets_of_both(two_instances):
    a, b = two_instances
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


async def test_an_idle_socket_outlives_the_channel_layers_blocking_read(two_instances):
    # channels-redis blocks 5 s on BZPOPMIN; a shorter client read timeout
    # used to close idle sockets with 1011.
    a, _ = two_instances
    async with connect(a.websocket_url("alice")) as idle:
        assert json.loads(await idle.recv())["type"] == "connection.established"
        await asyncio.sleep(7)
        sent = await asyncio.to_thread(a.send, "alice", "chat.message", {"n": 1})
        assert (await next_message(idle, LIVE_BOUND_SECONDS))["id"] == sent["messageId"]
