"""Lossy live delivery (sync/services/live_reader.py and streams.py, by socket).

Live delivery that loses or reorders messages must not make clients miss any.

In one process the hub loses nothing, but publishes from several threads can
reach it out of order, and between processes (Redis) a message can be lost.
These tests install a hub that drops or delays messages on purpose.
"""

from __future__ import annotations

import asyncio

import pytest

from sync.services import get_realtime_sync
from sync.services.hub import DeliveryHub
from sync.services.streams import ReaderStream

pytestmark = pytest.mark.django_db(transaction=True)


class DroppingHub(DeliveryHub):
    """Loses every message whose payload number is in `drop`; holds back those
    in `delay` until the next message has been dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.drop: set[int] = set()
        self.delay: set[int] = set()
        self.delayed: list = []

    def dispatch(self, entry):
        number = entry.envelope["payload"].get("n")
        if number in self.drop:
            return 0
        if number in self.delay:
            self.delayed.append(entry)
            return 0
        count = super().dispatch(entry)
        while self.delayed:
            super().dispatch(self.delayed.pop(0))
        return count


@pytest.fixture
def dropping_layer():
    hub = DroppingHub()
    get_realtime_sync().hub = hub
    return hub


async def receive_numbers(ws, count, timeout=2):
    numbers = []
    for _ in range(count):
        frame = await ws.receive_json_from(timeout)
        while frame["type"] == "ping":
            frame = await ws.receive_json_from(timeout)
        numbers.append(frame["payload"]["n"])
    return numbers


async def test_dropped_messages_arrive_late_and_once(dropping_layer, ws_connect, user):
    dropping_layer.drop = {1, 2, 5}
    ws, _ = await ws_connect(user)
    sync = get_realtime_sync()

    for n in range(8):
        if n % 3 == 0:
            await sync.abroadcast("announcement", {"n": n})
        else:
            await sync.apublish("data.updated", {"n": n}, user.pk)

    received = await receive_numbers(ws, 8)

    # Each exactly once; a lost one arrives late, so order holds per queue
    # (the user's, the broadcasts') rather than across them.
    assert sorted(received) == list(range(8))
    assert [n for n in received if n % 3 == 0] == [0, 3, 6]
    assert [n for n in received if n % 3] == [1, 2, 4, 5, 7]
    assert await ws.receive_nothing(0.2)


async def test_a_dropped_last_message_arrives_with_the_next_heartbeat(
    dropping_layer, ws_connect, user, sync_config
):
    sync_config(HEARTBEAT_INTERVAL=1)
    dropping_layer.drop = {1}
    ws, _ = await ws_connect(user)
    sync = get_realtime_sync()
    await sync.apublish("data.updated", {"n": 0}, user.pk)
    await sync.apublish("data.updated", {"n": 1}, user.pk)  # lost, nothing follows

    assert await receive_numbers(ws, 1) == [0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await receive_numbers(ws, 1, timeout=3) == [1]
    assert loop.time() - started < 2.5


async def test_lost_by_layer_and_store_closes_4409_for_a_resync(
    dropping_layer, ws_connect, user, sync_config
):
    sync_config(QUEUE_MAX_MESSAGES=2)
    dropping_layer.drop = {1, 2, 3}
    ws, _ = await ws_connect(user)
    sync = get_realtime_sync()
    for n in range(5):  # the store keeps only 3 and 4
        await sync.apublish("data.updated", {"n": n}, user.pk)

    assert await receive_numbers(ws, 1) == [0]
    # Nothing past the loss (3 and 4): their cursor would hide it from the
    # client's resume, which must answer `recovered: false`.
    assert await ws.receive_output(2) == {"type": "websocket.close", "code": 4409}


async def test_messages_out_of_order_arrive_in_order_and_once(
    dropping_layer, ws_connect, user
):
    dropping_layer.delay = {1, 3}
    ws, _ = await ws_connect(user)
    sync = get_realtime_sync()
    for n in range(5):
        await sync.apublish("data.updated", {"n": n}, user.pk)

    assert await receive_numbers(ws, 5) == [0, 1, 2, 3, 4]
    assert await ws.receive_nothing(0.2)


async def test_a_catch_up_asked_during_a_store_read_reads_again(
    dropping_layer, ws_connect, user, monkeypatch
):
    # The Redis subscription comes back (the hub asks every socket to catch
    # up) while a socket's store read is under way: that read may predate
    # what was lost meanwhile, so the socket must read once more, at once,
    # not at its next heartbeat (30 s).
    ws, _ = await ws_connect(user)
    sync = get_realtime_sync()
    read_taken, release = asyncio.Event(), asyncio.Event()
    read_page = ReaderStream.read_page

    async def slow_read_page(stream, max_bytes):
        answer = await read_page(stream, max_bytes)  # the store's state now
        read_taken.set()
        await release.wait()
        return answer

    monkeypatch.setattr(ReaderStream, "read_page", slow_read_page)
    dropping_layer.drop = {1, 3}
    await sync.apublish("data.updated", {"n": 0}, user.pk)
    await sync.apublish("data.updated", {"n": 1}, user.pk)  # lost live
    await sync.apublish("data.updated", {"n": 2}, user.pk)  # a gap: a read starts
    await asyncio.wait_for(read_taken.wait(), 2)
    await sync.apublish("data.updated", {"n": 3}, user.pk)  # lost, after the read
    dropping_layer.catch_up_all()
    await asyncio.sleep(0)
    monkeypatch.setattr(ReaderStream, "read_page", read_page)
    release.set()

    assert await receive_numbers(ws, 4) == [0, 1, 2, 3]
    assert await ws.receive_nothing(0.2)
