"""The per-socket outbox (sync/ws/outbox.py): ordered output, bounded in bytes
(close 4413).
"""

from __future__ import annotations

import asyncio

from sync.core.protocol import CloseCode
from sync.ws.outbox import Outbox


class StuckClient:
    """An ASGI `send` whose client stops reading after `reads` frames."""

    def __init__(self, reads: int = 0) -> None:
        self.sent: list[dict] = []
        self.reads = reads
        self.unblock = asyncio.Event()

    async def __call__(self, message: dict) -> None:
        if len(self.sent) >= self.reads:
            await self.unblock.wait()
        self.sent.append(message)


CLOSED_4413 = {"type": "websocket.close", "code": CloseCode.SLOW_CONSUMER}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_frames_go_out_in_order_then_the_close():
    client = StuckClient(reads=10)
    outbox = Outbox(client, limit=1000)
    for text in ("a", "b", "c"):
        assert outbox.put_text(text)
    outbox.close(1000)
    await outbox.drain(1)

    assert [message.get("text") for message in client.sent] == ["a", "b", "c", None]
    assert client.sent[-1] == {"type": "websocket.close", "code": 1000}


async def test_a_client_that_stops_reading_is_closed_4413_without_the_backlog():
    client = StuckClient(reads=1)
    outbox = Outbox(client, limit=100)
    assert outbox.put_text("x" * 40)  # taken by the client
    await settle()
    assert outbox.put_text("y" * 40)  # written, never read
    await settle()
    assert outbox.put_text("z" * 40)  # waits in the outbox: 40 pending
    assert outbox.put_text("w" * 40)  # 80 pending
    assert not outbox.put_text("v" * 40)  # 120 > 100: slow consumer

    assert outbox.overflowed
    assert outbox.pending_bytes == 0  # the backlog was dropped
    client.unblock.set()
    await outbox.drain(1)
    assert client.sent[-1] == CLOSED_4413
    texts = [message.get("text", "") for message in client.sent]
    assert not any(text.startswith(("z", "w", "v")) for text in texts)


async def test_bytes_the_server_still_buffers_count_against_the_bound():
    client = StuckClient(reads=100)
    outbox = Outbox(client, limit=100, backlog=lambda: 90)

    assert not outbox.put_text("x" * 20)
    assert outbox.overflowed


async def test_a_send_racing_the_clients_close_ends_quietly(caplog):
    async def gone(message):
        raise RuntimeError("Attempt to send on a closed protocol")

    outbox = Outbox(gone, limit=100)
    outbox.put_text("late")
    await outbox.drain(1)

    assert outbox.closed
    assert not outbox.put_text("later")
    assert "ERROR" not in caplog.text


# Room for long outputs written piece by piece (replays) -------------------------


async def test_waiting_for_room_ends_once_the_client_has_read_enough():
    client = StuckClient(reads=1)
    outbox = Outbox(client, limit=1000)
    for text in ("a" * 100, "b" * 100, "c" * 100, "d" * 100):
        assert outbox.put_text(text)
    await settle()
    assert outbox.pending_bytes == 200  # c and d wait behind the stuck b

    waiting = asyncio.ensure_future(outbox.wait_for_room(100, timeout=5))
    await settle()
    assert not waiting.done()
    client.unblock.set()

    assert await waiting is True
    assert outbox.pending_bytes <= 100


async def test_a_servers_own_backlog_is_asked_again_soon_then_less_often(
    monkeypatch,
):
    # daphne reports what it still buffers, and nothing wakes us when that
    # drains: asked every 0.25 s, a replay went at one page per 0.25 s.
    backlog = [5000] * 8 + [0]
    outbox = Outbox(StuckClient(reads=100), limit=10_000, backlog=backlog.pop)
    waits = []
    wait = asyncio.wait

    async def recorded_wait(futures, timeout):
        waits.append(timeout)
        return await wait(futures, timeout=timeout)

    monkeypatch.setattr(asyncio, "wait", recorded_wait)
    backlog.reverse()  # pop() gives the 5000s first, then 0

    assert await outbox.wait_for_room(100, timeout=5) is True
    assert len(waits) == 8
    assert waits[0] <= 0.01
    assert waits == sorted(waits)
    assert waits[-1] > waits[0]  # less often
    assert max(waits) <= 0.25


async def test_waiting_for_room_gives_up_on_a_client_that_reads_nothing():
    client = StuckClient(reads=1)
    outbox = Outbox(client, limit=1000)
    for text in ("a" * 100, "b" * 100, "c" * 100):
        assert outbox.put_text(text)
    await settle()

    assert await outbox.wait_for_room(50, timeout=0.05) is False


async def test_waiting_for_room_stops_at_once_when_the_socket_closes():
    client = StuckClient(reads=1)
    outbox = Outbox(client, limit=1000)
    for text in ("a" * 100, "b" * 100, "c" * 100):
        assert outbox.put_text(text)
    await settle()
    waiting = asyncio.ensure_future(outbox.wait_for_room(50, timeout=5))
    await settle()

    outbox.stop()  # the client went away

    assert await asyncio.wait_for(waiting, 1) is False


async def test_giving_up_on_a_slow_client_drops_its_backlog_and_closes_4413():
    client = StuckClient(reads=1)
    outbox = Outbox(client, limit=1000)
    for text in ("a", "b", "c"):
        assert outbox.put_text(text)
    await settle()

    outbox.give_up_on_slow_client()
    client.unblock.set()
    await outbox.drain(1)

    assert outbox.overflowed
    # b was stuck in the server's send: cancelled with the rest.
    assert [message.get("text") for message in client.sent] == ["a", None]
    assert client.sent[-1] == CLOSED_4413


async def test_a_stated_size_counts_instead_of_the_texts_length():
    # Stored messages may hold UTF-8 beyond ASCII: their size in bytes is
    # known and counted, not their count of characters.
    client = StuckClient(reads=0)
    outbox = Outbox(client, limit=100)
    assert outbox.put_text("é" * 10, size=20)  # in flight
    assert outbox.put_text("é" * 40, size=80)  # 80 pending
    assert not outbox.put_text("é" * 11, size=22)  # 102 > 100


async def test_the_close_frame_carries_a_plain_int_code():
    # autobahn (under daphne) refuses a close code whose type is not exactly
    # int: an IntEnum never closed the socket.
    client = StuckClient(reads=10)
    outbox = Outbox(client, limit=1000)
    outbox.close(CloseCode.UNAUTHENTICATED)
    await outbox.drain(1)
    assert type(client.sent[-1]["code"]) is int
