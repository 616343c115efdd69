"""ReaderStream (sync/services/streams.py): deciding live events and matching
the poll's cursors.
"""

from __future__ import annotations

import pytest

from sync.services import get_realtime_sync
from sync.services.realtime import build_message
from sync.services.streams import ReaderStream, Verdict
from sync.store.cursors import Position, decode_cursor
from sync.store.paging import BROADCAST, USER
from tests.sync.http.api_calls import payloads


async def read_all(stream: ReaderStream, max_bytes: int = 1_000_000):
    """Every message after the stream's position, page by page; and any gap."""
    messages, gap = [], False
    while True:
        page = await stream.read_page(max_bytes)
        messages += page.parse_messages()
        gap = gap or page.gap
        if not page.has_more:
            return messages, gap


def add_user(store, user_id="1", n=0):
    return store.add_message(build_message("item.added", {"n": n}, user_id=user_id))


def add_broadcast(store, n=0, topics=()):
    return store.add_message(build_message("announcement", {"n": n}, topics=topics))


def live(stream, entry):
    """Feed a stored message to the stream as the channel layer would."""
    message = entry.envelope
    verdict = stream.judge(entry.queue, entry.seq, message["topics"])
    if verdict is Verdict.DELIVER:
        return verdict, {**message, "cursor": stream.advance(entry.queue, entry.seq)}
    return verdict, None


async def test_events_in_sequence_are_delivered_with_the_polls_cursors(store):
    stream = ReaderStream(store, "1")
    start = await stream.start(None)
    entries = [add_user(store, n=0), add_broadcast(store, n=1), add_user(store, n=2)]

    delivered = [live(stream, entry)[1] for entry in entries]
    polled = store.read("1", cursor=start).parse_messages()

    assert [m["id"] for m in delivered] == [m["id"] for m in polled]
    assert [m["cursor"] for m in delivered] == [m["cursor"] for m in polled]


async def test_an_event_seen_twice_is_a_duplicate(store):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    entry = add_user(store)

    assert live(stream, entry)[0] is Verdict.DELIVER
    assert live(stream, entry)[0] is Verdict.DUPLICATE


async def test_a_skipped_sequence_is_a_gap_filled_from_the_store(store):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    add_user(store, n=0)  # its live event is lost
    second = add_user(store, n=1)

    assert live(stream, second)[0] is Verdict.GAP
    missed, gap = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [0, 1]
    assert not gap
    assert live(stream, second)[0] is Verdict.DUPLICATE


async def test_broadcasts_for_other_topics_are_skipped_not_gaps(store):
    stream = ReaderStream(store, "1", topics=["ops"])
    await stream.start(None)
    elsewhere = add_broadcast(store, n=0, topics=["sales"])
    mine = add_broadcast(store, n=1, topics=["ops"])

    assert live(stream, elsewhere)[0] is Verdict.SKIP
    verdict, message = live(stream, mine)
    assert verdict is Verdict.DELIVER
    assert message["payload"] == {"n": 1}


async def test_a_hole_after_unseen_topic_broadcasts_reads_the_store_once(store):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    for n in range(3):
        add_broadcast(store, n=n, topics=["sales"])  # never reach this reader
    news = add_broadcast(store, n=9)

    assert live(stream, news)[0] is Verdict.GAP
    missed, _ = await read_all(stream)
    assert [m["payload"]["n"] for m in missed] == [9]
    later = add_broadcast(store, n=10)
    assert live(stream, later)[0] is Verdict.DELIVER


async def test_resume_replays_exactly_what_came_after_the_cursor(store):
    first = add_user(store, n=0)
    add_broadcast(store, n=1)
    add_user(store, n=2)
    cursor = Position(store.epoch, first.seq, 0)
    stream = ReaderStream(store, "1")

    head = await stream.start(cursor)
    missed, gap = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [1, 2]
    assert not gap
    assert stream.position == head


async def test_resume_from_another_epoch_replays_everything_and_reports_it(store):
    add_user(store, n=0)
    stream = ReaderStream(store, "1")

    await stream.start(Position("0ther", 5, 5))
    missed, gap = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [0]
    assert gap
    assert stream.position.epoch == store.epoch


async def test_resume_reads_past_one_page(store, monkeypatch):
    monkeypatch.setattr("sync.services.streams.PAGE_SIZE", 2)
    for n in range(5):
        add_user(store, n=n)
    stream = ReaderStream(store, "1")
    await stream.start(Position(store.epoch, 0, 0))

    missed, _ = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [0, 1, 2, 3, 4]


async def test_subscribing_later_does_not_pull_in_older_topic_messages(store):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    old = add_broadcast(store, n=0, topics=["ops"])
    assert live(stream, old)[0] is Verdict.SKIP

    stream.subscribe(["ops"])
    add_user(store, n=1)
    missed, _ = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [1]


@pytest.mark.parametrize("queue", [USER, BROADCAST])
async def test_is_behind_when_the_store_moved_past_the_reader(store, queue):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    assert not await stream.is_behind()

    entry = add_user(store) if queue == USER else add_broadcast(store)

    assert await stream.is_behind()
    live(stream, entry)
    assert not await stream.is_behind()


# Hardening (issue 6) ------------------------------------------------------------


async def test_every_broadcast_after_a_resume_from_another_epoch_is_delivered(store):
    add_broadcast(store, n=0)
    stream = ReaderStream(store, "1")

    await stream.start(Position("0ther", 5, 5000))  # a cursor from before a restart
    missed, gap = await read_all(stream)
    later = [add_broadcast(store, n=n) for n in (1, 2, 3)]

    assert [m["payload"]["n"] for m in missed] == [0]
    assert gap
    assert [live(stream, entry)[0] for entry in later] == [Verdict.DELIVER] * 3


async def test_a_live_event_before_resyncing_another_epoch_reads_the_store(store):
    stream = ReaderStream(store, "1")
    await stream.start(Position("0ther", 0, 0))

    assert live(stream, add_broadcast(store, n=0))[0] is Verdict.GAP


async def test_an_expired_broadcast_of_another_topic_is_not_a_loss(
    store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    stream = ReaderStream(store, "1", topics=["ops"])
    await stream.start(None)
    add_broadcast(store, n=0, topics=["sales"])  # never reaches this reader
    clock.advance(11)
    news = add_broadcast(store, n=1)

    assert live(stream, news)[0] is Verdict.GAP  # a hole: ask the store
    missed, gap = await read_all(stream)

    assert [m["payload"]["n"] for m in missed] == [1]
    assert not gap  # so the socket is not closed with 4409
    resumed = store.read("1", cursor=decode_cursor(missed[0]["cursor"]))
    assert not resumed.gap


async def test_skipped_broadcasts_are_behind_the_next_cursor(store):
    stream = ReaderStream(store, "1")
    await stream.start(None)
    elsewhere = add_broadcast(store, n=0, topics=["sales"])
    assert live(stream, elsewhere)[0] is Verdict.SKIP
    verdict, message = live(stream, add_user(store, n=1))

    assert verdict is Verdict.DELIVER
    assert message["cursor"] == store.read("1", since=0).parse_messages()[-1]["cursor"]
    assert not await stream.is_behind()


# Restarts -----------------------------------------------------------------------


async def test_a_socket_resumed_across_a_restart_receives_every_later_broadcast(
    ws_connect, user
):
    sync = get_realtime_sync()
    for n in range(3):
        await sync.abroadcast("announcement", {"n": n})
    old_epoch_cursor = "0ther-5-5000"  # far ahead of the new broadcast sequence

    ws, first = await ws_connect(user, query=f"cursor={old_epoch_cursor}")
    replayed = [await ws.receive_json_from(1) for _ in range(3)]
    for n in range(3, 6):
        await sync.abroadcast("announcement", {"n": n})
    live = [await ws.receive_json_from(1) for _ in range(3)]

    assert first["payload"]["recovered"] is False
    assert payloads(replayed) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert payloads(live) == [{"n": 3}, {"n": 4}, {"n": 5}]


# Dropped broadcasts of other topics -------------------------------------------------


async def test_an_expired_topic_broadcast_does_not_close_other_sockets(
    ws_connect, user, store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    sync = get_realtime_sync()
    ws, _ = await ws_connect(user, query="topics=ops")
    await sync.abroadcast("announcement", {"n": 0}, topics=["sales"])
    clock.advance(11)  # the sales broadcast expires
    await sync.abroadcast("announcement", {"n": 1})

    news = await ws.receive_json_from(1)
    await ws.send_json_to({"type": "ping", "id": "p"})
    pong = await ws.receive_json_from(1)
    _, resumed = await ws_connect(user, query=f"cursor={news['cursor']}")

    assert news["payload"] == {"n": 1}
    assert pong["type"] == "pong"  # still open: no 4409
    assert resumed["payload"]["recovered"] is True
