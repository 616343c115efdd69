"""LiveReader: one socket's messages, live and from the store, once and in order.

The reader runs here on a real in-memory store and ReaderStream, without a
socket: its output is a fake that records the frames and how it was told to
close, and the hub is played by handing messages to ``on_message`` by hand.
Store reads can be held mid-way (``Reads``), to publish while one is in flight.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sync.core import metrics
from sync.core.exceptions import ServiceUnavailable, StoreUnavailable
from sync.core.protocol import CloseCode
from sync.services import live_reader
from sync.services.hub import EncodedMessage
from sync.services.live_reader import LiveReader, page_bytes, replay_patience
from sync.services.realtime import build_message
from sync.services.streams import ReaderStream
from sync.store.cursors import Position, decode_cursor

USER = "1"

# A reader that waits forever is a failure: say so in seconds, not minutes.
pytestmark = pytest.mark.timeout(10)


class FakeOutput:
    """A socket's output: the frames written, and why it closed (if it did)."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.close_code: int | None = None  # set by the reader's verdicts
        self.left = False  # the client went away
        self.leave_after: int | None = None  # ... once this many frames are sent
        self.room = True  # what wait_for_room answers
        self.waits: list[tuple[int, float]] = []
        self.while_waiting = lambda: None  # runs while the reader waits for room
        self.errors: list[ServiceUnavailable] = []

    @property
    def ended(self) -> bool:
        return self.close_code is not None or self.left

    def send_text(self, text: str, size: int) -> None:
        assert not self.ended, "written after the socket ended"
        frame = json.loads(text)
        assert size >= len(text.encode()), "a size below the frame's bytes"
        self.frames.append(frame)
        if self.leave_after is not None and len(self.frames) >= self.leave_after:
            self.left = True

    async def wait_for_room(self, room: int, timeout: float) -> bool:
        self.waits.append((room, timeout))
        self.while_waiting()
        await asyncio.sleep(0)
        return self.room

    def lost_messages(self) -> None:
        self.close_code = CloseCode.RESYNC

    def slow_consumer(self) -> None:
        self.close_code = CloseCode.SLOW_CONSUMER

    async def unavailable(self, error: ServiceUnavailable) -> None:
        self.errors.append(error)
        self.close_code = CloseCode.UNAVAILABLE

    @property
    def numbers(self) -> list[int]:
        return [frame["payload"]["n"] for frame in self.frames]


class Reads:
    """Counts the stream's store reads; `hold()` stops the next one in flight,
    before or after it reads the store, until `release()`."""

    def __init__(self, stream: ReaderStream, monkeypatch) -> None:
        self.count = 0
        self.fail_with: Exception | None = None
        self.in_flight = asyncio.Event()
        self._gate = asyncio.Event()
        self._armed = False  # the next read waits for the gate
        self._where = "before"
        read_page = stream.read_page

        async def counted(max_bytes: int):
            self.count += 1
            if self.fail_with is not None:
                raise self.fail_with
            if self._where == "before":
                await self._wait()
            page = await read_page(max_bytes)
            if self._where == "after":
                await self._wait()
            return page

        monkeypatch.setattr(stream, "read_page", counted)

    def hold(self, where: str = "before") -> None:
        self._armed, self._where = True, where

    def release(self) -> None:
        assert self.in_flight.is_set(), "no read is held"
        self._gate.set()

    async def _wait(self) -> None:
        if self._armed:
            self._armed = False
            self.in_flight.set()
            await self._gate.wait()


def stored(store, n: int, user_id: str | None = USER, topics=()) -> EncodedMessage:
    """Publish message `n` to the store only (its live copy is for the test to
    hand over, or lose): a user message, or a broadcast with user_id=None."""
    message = build_message("item", {"n": n}, user_id=user_id, topics=topics)
    return EncodedMessage(store.add_message(message))


@pytest.fixture
def output() -> FakeOutput:
    return FakeOutput()


@pytest.fixture
def stream(store) -> ReaderStream:
    return ReaderStream(store, USER, topics=["ops"])


@pytest.fixture
def reads(stream, monkeypatch) -> Reads:
    return Reads(stream, monkeypatch)


@pytest.fixture
def reader(stream, output) -> LiveReader:
    return LiveReader(stream, output)


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """What the reader adds to sync_messages_delivered_total{transport=websocket}."""
    counts: list[int] = []
    count = metrics.count

    def counting(series, amount: int) -> None:
        if series is metrics.DELIVERED_WEBSOCKET:
            counts.append(amount)
        count(series, amount)

    monkeypatch.setattr(metrics, "count", counting)
    return counts


@pytest.fixture
async def live(reader, reads) -> LiveReader:
    """A reader connected without a cursor, its (empty) replay sent."""
    await reader.replay(None)
    await reader.finish_replay(None)
    assert not reader.filling
    return reader


def assert_in_step(output: FakeOutput, store) -> None:
    """Each frame's cursor is past the one before, the last one at the head."""
    positions = [decode_cursor(frame["cursor"]) for frame in output.frames]
    pairs = [(p.user_seq, p.broadcast_seq) for p in positions]
    assert pairs == sorted(set(pairs)), "cursors out of order or repeated"
    assert positions[-1] == store.head(USER)


# Connecting and resuming -------------------------------------------------------


async def test_a_connect_without_cursor_sends_only_what_arrives_from_then(
    store, reader, output, reads
):
    stored(store, 0)  # before the connect: not for this socket

    head, first = await reader.replay(None)
    # Registered with the hub before the replay: held until it is sent.
    assert not reader.on_message(stored(store, 1))
    assert not reader.on_message(stored(store, 2))
    assert output.frames == []
    await reader.finish_replay(first)

    assert first is None
    assert head == Position(store.epoch, 1, 0)
    assert output.numbers == [1, 2]
    assert reads.count == 0  # nothing to read from the store
    assert not reader.filling
    assert_in_step(output, store)


@pytest.mark.parametrize("published", ["before", "after"])
async def test_a_resume_sends_the_replay_then_what_came_live_meanwhile(
    store, reader, output, reads, counted, published
):
    """Messages published while the replay is read come once, after it,
    whether the read finds them in the store (`before`) or not (`after`)."""
    entries = [stored(store, n) for n in range(3)]
    reads.hold(published)
    replaying = asyncio.create_task(
        reader.replay(Position(store.epoch, entries[0].entry.seq, 0))
    )
    await reads.in_flight.wait()

    assert not reader.on_message(entries[2])  # a late live copy of a replayed one
    assert not reader.on_message(stored(store, 3))
    assert not reader.on_message(stored(store, 4, user_id=None))  # a broadcast
    reads.release()
    head, first = await replaying
    assert not reader.on_message(stored(store, 5))
    await reader.finish_replay(first)

    assert head == Position(store.epoch, 3, 0)
    assert not first.gap
    assert output.numbers == [1, 2, 3, 4, 5]
    assert sum(counted) == 5  # replayed or held: counted here, not by the hub
    assert output.close_code is None
    assert not reader.filling
    assert_in_step(output, store)


async def test_a_long_replay_goes_a_page_at_a_time_as_the_client_reads(
    store, reader, output, reads, monkeypatch
):
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
    for n in range(5):
        stored(store, n)

    _, first = await reader.replay(Position(store.epoch, 0, 0))
    assert first.count == 2
    await reader.finish_replay(first)

    assert output.numbers == [0, 1, 2, 3, 4]
    assert output.waits == [(page_bytes(), replay_patience())] * 2
    assert reads.count == 3
    assert_in_step(output, store)


@pytest.mark.parametrize("client", ["stops reading", "leaves"])
async def test_a_replay_stops_when_the_client_does_not_take_its_pages(
    store, reader, output, reads, monkeypatch, client
):
    """Not reading closes 4413; a client that left is not told anything."""
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
    for n in range(5):
        stored(store, n)
    output.room = False
    if client == "leaves":
        output.while_waiting = lambda: setattr(output, "left", True)

    _, first = await reader.replay(Position(store.epoch, 0, 0))
    assert not reader.on_message(stored(store, 5))
    await reader.finish_replay(first)

    assert output.numbers == [0, 1]
    assert reads.count == 1  # no page read past the one the client left
    expected = CloseCode.SLOW_CONSUMER if client == "stops reading" else None
    assert output.close_code == expected
    assert not reader.filling


async def test_a_replay_stops_as_soon_as_the_client_leaves(
    store, reader, output, reads, monkeypatch
):
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 3)
    for n in range(7):
        stored(store, n)
    output.leave_after = 2  # in the middle of the first page

    _, first = await reader.replay(Position(store.epoch, 0, 0))
    await reader.finish_replay(first)

    assert output.numbers == [0, 1]
    assert output.waits == []  # no wait for room, and no page more
    assert reads.count == 1
    assert output.close_code is None


async def test_a_hole_among_messages_held_during_the_connect_reads_the_store(
    store, reader, output, reads
):
    """Publishes from several threads may reach the hub out of order."""
    await reader.replay(None)
    late = stored(store, 0)  # its live copy comes after the next one's
    assert not reader.on_message(stored(store, 1))
    await reader.finish_replay(None)

    assert output.numbers == [0, 1]
    assert reads.count == 1
    assert not reader.on_message(late)
    assert_in_step(output, store)


async def test_history_lost_before_a_resume_is_reported_by_it_not_closed_4409(
    store, reader, output
):
    stored(store, 0)

    # A cursor of another epoch (a restart of the in-memory store).
    _, first = await reader.replay(Position("0ther", 7, 7))
    await reader.finish_replay(first)

    assert first.gap  # the established frame says recovered: false
    assert output.numbers == [0]
    assert output.close_code is None


async def lose_history_during_a_replay(store, reader, output) -> Position:
    """Resume; while the client reads the first page, a burst pushes the
    unread ones out of the store. The client's cursor before, returned."""
    for n in range(5):
        stored(store, n)
    burst = iter([(5, 6, 7)])  # once
    output.while_waiting = lambda: [stored(store, n) for n in next(burst, ())]
    cursor = Position(store.epoch, 0, 0)

    _, first = await reader.replay(cursor)
    assert not first.gap
    await reader.finish_replay(first)
    return cursor


async def test_history_lost_during_a_replay_closes_4409(
    store, reader, output, sync_config, monkeypatch
):
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
    sync_config(QUEUE_MAX_MESSAGES=5)

    await lose_history_during_a_replay(store, reader, output)

    assert output.numbers[:2] == [0, 1]
    assert 2 not in output.numbers
    assert output.close_code == CloseCode.RESYNC


async def test_a_store_failure_while_paging_a_replay_reaches_the_consumer(
    store, reader, output, reads, monkeypatch
):
    """finish_replay raises it: the consumer answers 1011 (``connect``)."""
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
    for n in range(3):
        stored(store, n)
    _, first = await reader.replay(Position(store.epoch, 0, 0))
    reads.fail_with = StoreUnavailable()

    with pytest.raises(StoreUnavailable):
        await reader.finish_replay(first)

    assert output.numbers == [0, 1]


# Live delivery -----------------------------------------------------------------


async def test_live_messages_in_sequence_go_out_at_once_and_only_once(
    store, live, output, reads, counted
):
    first, second = stored(store, 0), stored(store, 1, user_id=None)

    assert live.on_message(first)
    assert live.on_message(second)
    assert not live.on_message(first)  # a duplicate: nothing sent
    assert not live.on_message(stored(store, 2, user_id=None, topics=["sales"]))
    assert live.on_message(stored(store, 3, user_id=None, topics=["ops"]))

    assert output.numbers == [0, 1, 3]  # a broadcast for other topics skipped
    assert reads.count == 0
    assert sum(counted) == 0  # sent at once: the hub counts those
    assert live.fill_task is None
    assert_in_step(output, store)


async def test_a_hole_in_the_live_sequence_is_filled_from_the_store_first(
    store, live, output, reads
):
    stored(store, 0)  # its live copy is lost
    reads.hold("after")

    assert not live.on_message(stored(store, 1))  # ahead of the hole
    assert live.filling
    await reads.in_flight.wait()
    # Published while the store is read, after the read: held, sent after it.
    assert not live.on_message(stored(store, 2))
    assert output.frames == []
    reads.release()
    await live.fill_task

    assert output.numbers == [0, 1, 2]
    assert reads.count == 1
    assert not live.filling
    assert live.on_message(stored(store, 3))  # in step again
    assert_in_step(output, store)


async def lose_history_behind_a_hole(store, live) -> Position:
    """Live copies lost, then one more pushes the oldest out of the store
    (QUEUE_MAX_MESSAGES=3). The client's cursor before, returned."""
    cursor = store.head(USER)
    for n in range(3):
        stored(store, n)

    live.on_message(stored(store, 3))
    await live.fill_task
    return cursor


async def test_a_hole_the_store_no_longer_covers_closes_4409(
    store, live, output, sync_config
):
    sync_config(QUEUE_MAX_MESSAGES=3)

    await lose_history_behind_a_hole(store, live)

    assert 0 not in output.numbers
    assert output.close_code == CloseCode.RESYNC
    assert not live.filling


@pytest.mark.parametrize("where", ["hole", "replay"])
async def test_after_a_4409_the_clients_cursor_still_resumes_unrecovered(
    store, reader, output, sync_config, monkeypatch, where
):
    """The README: on 4409 "reconnect with your cursor: you will get
    recovered: false". The client's cursor is that of the last message it
    got (the TypeScript client's `receive`), so no message may reach it with
    a cursor past messages it lost, or the loss goes unreported."""
    if where == "hole":
        sync_config(QUEUE_MAX_MESSAGES=3)
        await reader.replay(None)
        await reader.finish_replay(None)
        cursor = await lose_history_behind_a_hole(store, reader)
    else:
        monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
        sync_config(QUEUE_MAX_MESSAGES=5)
        cursor = await lose_history_during_a_replay(store, reader, output)
    assert output.close_code == CloseCode.RESYNC
    if output.frames:
        cursor = decode_cursor(output.frames[-1]["cursor"])

    assert store.read(USER, cursor=cursor).gap


@pytest.mark.parametrize("how", ["hole", "catch_up"])
async def test_a_store_failure_while_filling_closes_1011(
    store, live, output, reads, how
):
    stored(store, 0)
    reads.fail_with = StoreUnavailable()

    if how == "hole":
        live.on_message(stored(store, 1))
        await live.fill_task
    else:
        await live.catch_up()

    assert output.close_code == CloseCode.UNAVAILABLE
    assert output.errors == [reads.fail_with]
    assert output.frames == []
    assert not live.filling


async def test_live_messages_past_the_hold_limit_are_read_from_the_store(
    store, reader, output, reads, monkeypatch
):
    monkeypatch.setattr(live_reader, "MAX_HELD_MESSAGES", 2)
    await reader.replay(None)

    for n in range(5):
        reader.on_message(stored(store, n))
    assert len(reader.held) == 2
    await reader.finish_replay(None)

    assert output.numbers == [0, 1, 2, 3, 4]
    assert reads.count == 1
    assert_in_step(output, store)


async def test_nothing_goes_to_a_client_that_left(store, live, output, reads):
    async with live.holding():
        for n in range(3):
            live.on_message(stored(store, n))
        output.leave_after = 1  # gone once the first held one is sent

    assert live.on_message(stored(store, 3)) is False

    assert output.numbers == [0]
    assert live.held == []
    assert reads.count == 0
    assert not live.filling


# Holding, catching up, stopping ----------------------------------------------


async def test_holding_keeps_live_messages_back_until_the_block_ends(
    store, live, output, reads
):
    async with live.holding():
        async with live.holding():  # nested: only the outer block lets go
            assert not live.on_message(stored(store, 0))
        assert not live.on_message(stored(store, 1))
        assert output.frames == []  # e.g. an ack goes out first

    assert output.numbers == [0, 1]
    assert reads.count == 0  # what was held is in sequence: no store read
    assert not live.filling


async def test_catch_up_waits_for_a_fill_under_way_then_reads_once_more(
    store, live, output, reads
):
    stored(store, 0)
    reads.hold("after")
    live.on_message(stored(store, 1))  # a hole: a fill starts
    await reads.in_flight.wait()
    stored(store, 2)  # after the fill's read; its live copy is lost

    catching_up = asyncio.create_task(live.catch_up())
    await asyncio.sleep(0.01)
    assert reads.count == 1  # no second read alongside the first
    reads.release()
    await catching_up

    assert output.numbers == [0, 1, 2]
    assert reads.count == 2
    assert live.fill_task.done()
    assert_in_step(output, store)


async def test_live_messages_wait_for_a_catch_up_read_under_way(
    store, live, output, reads
):
    stored(store, 0)  # its live copy lost
    reads.hold("after")
    catching_up = asyncio.create_task(live.catch_up())
    await reads.in_flight.wait()

    assert not live.on_message(stored(store, 1))  # not ahead of message 0
    reads.release()
    await catching_up

    assert output.numbers == [0, 1]
    assert reads.count == 1
    assert_in_step(output, store)


async def test_catch_up_if_behind_reads_only_when_the_store_moved_on(
    store, live, output, reads
):
    await live.catch_up_if_behind()
    assert reads.count == 0

    stored(store, 0)  # the last message, its live copy lost
    await live.catch_up_if_behind()

    assert output.numbers == [0]
    assert reads.count == 1


async def test_catch_up_if_behind_during_a_fill_makes_it_read_again(
    store, live, output, reads
):
    stored(store, 0)
    reads.hold("after")
    live.on_message(stored(store, 1))
    await reads.in_flight.wait()
    stored(store, 2)  # missed by the read under way, its live copy lost

    await live.catch_up_if_behind()  # returns at once: the fill reads again
    assert live.read_again
    reads.release()
    await live.fill_task

    assert output.numbers == [0, 1, 2]
    assert reads.count == 2
    assert not live.read_again


async def test_catch_up_if_behind_leaves_an_ended_socket_alone(
    store, live, output, reads, monkeypatch
):
    async def must_not_ask() -> bool:
        raise AssertionError("asked the store for an ended socket")

    monkeypatch.setattr(live.stream, "is_behind", must_not_ask)
    output.left = True
    stored(store, 0)

    await live.catch_up_if_behind()

    assert reads.count == 0
    assert output.frames == []


async def test_stop_cancels_a_store_read_under_way(store, live, output, reads):
    stored(store, 0)
    reads.hold("before")
    live.on_message(stored(store, 1))
    await reads.in_flight.wait()

    live.stop()
    done, _ = await asyncio.wait({live.fill_task}, timeout=1)

    assert done
    assert live.fill_task.cancelled()
    assert output.frames == []
    assert not live.filling
