"""The backend-neutral paging rules (sync/store/paging.py), run against a plain
list-backed queue.

A second backend (Redis) reuses `read_page`; these tests pin what it gets
from it, whatever the storage: where a read starts, when a loss counts as
this reader's, how pages are cut, and what the watermark promises.
"""

from __future__ import annotations

from collections.abc import Iterable

from sync.services import get_realtime_sync
from sync.store.cursors import Position
from sync.store.envelopes import Draft
from sync.store.paging import (
    BROADCAST,
    NOTHING_DROPPED,
    USER,
    DropMark,
    Epoch,
    PageRequest,
    StoredMessage,
    read_page,
)
from tests.sync.http.api_calls import payloads, poll

EPOCH = Epoch("e1", started_ms=1_000)
NOW_MS = 5_000


class ListQueue:
    """The smallest QueueView: a list, and drops remembered per audience."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.entries: list[StoredMessage] = []
        self.last_seq = 0
        self.last_timestamp = 0
        self.drops: list[tuple[frozenset[str], DropMark]] = []

    def add(self, order: int, timestamp: int, topics: Iterable[str] = ()) -> None:
        self.last_seq += 1
        self.last_timestamp = timestamp
        draft = Draft(
            id=f"{self.queue}{self.last_seq}",
            type="item",
            payload_json=b"{}",
            user_id=None,
            topics=tuple(topics),
            correlation_id=None,
        )
        prefix, suffix = draft.parts().with_timestamp(timestamp)
        self.entries.append(
            StoredMessage(
                self.queue,
                self.last_seq,
                order,
                timestamp,
                0.0,
                None,
                tuple(topics),
                prefix,
                suffix,
            )
        )

    def drop_oldest(self) -> None:
        entry = self.entries.pop(0)
        mark = DropMark(entry.seq, entry.timestamp)
        self.drops.append((frozenset(entry.topics), mark))

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        seen = [m for audience, m in self.drops if not audience or audience & topics]
        return max(seen, default=NOTHING_DROPPED)

    def seq_at_or_before(self, timestamp: int) -> int:
        kept = [e.seq for e in self.entries if e.timestamp <= timestamp]
        first = self.entries[0].seq if self.entries else self.last_seq + 1
        return max(kept, default=first - 1)

    def after(self, seq: int) -> list[StoredMessage]:
        return [entry for entry in self.entries if entry.seq > seq]


def read(
    users, broadcasts, *, since=None, cursor=None, topics=(), limit=100, max_bytes=None
):
    request = PageRequest(since, cursor, frozenset(topics), limit, max_bytes)
    return read_page(EPOCH, users, broadcasts, request, NOW_MS)


def ids(result) -> list[str]:
    return [message["id"] for message in result.parse_messages()]


def two_queues() -> tuple[ListQueue, ListQueue]:
    return ListQueue(USER), ListQueue(BROADCAST)


def test_the_two_queues_merge_in_publication_order():
    users, broadcasts = two_queues()
    users.add(order=1, timestamp=2_000)
    broadcasts.add(order=2, timestamp=2_001)
    users.add(order=3, timestamp=2_002)

    assert ids(read(users, broadcasts, since=0)) == ["user1", "broadcast1", "user2"]


def test_a_dropped_broadcast_for_another_topic_is_no_gap():
    users, broadcasts = two_queues()
    broadcasts.add(order=1, timestamp=2_000, topics=["sales"])
    broadcasts.add(order=2, timestamp=2_001)
    broadcasts.drop_oldest()
    start = Position(EPOCH.id, 0, 0)

    for options in ({"cursor": start}, {"since": 1_500}):
        assert read(users, broadcasts, topics=["ops"], **options).gap is False
        assert read(users, broadcasts, topics=["sales"], **options).gap is True


def test_a_cursor_moves_past_broadcasts_the_reader_cannot_see():
    users, broadcasts = two_queues()
    broadcasts.add(order=1, timestamp=2_000, topics=["sales"])
    users.add(order=2, timestamp=2_001)

    result = read(users, broadcasts, cursor=Position(EPOCH.id, 0, 0))

    assert result.parse_messages()[0]["cursor"] == "e1-1-1"
    assert result.position == Position(EPOCH.id, 1, 1)


def test_the_watermark_ignores_the_readers_since():
    users, broadcasts = two_queues()
    users.add(order=1, timestamp=2_000)

    result = read(users, broadcasts, since=10**18)

    assert result.parse_messages() == []
    assert result.timestamp == NOW_MS - 1


def test_a_since_from_before_the_epoch_is_a_gap_but_zero_is_not():
    users, broadcasts = two_queues()

    assert read(users, broadcasts, since=500).gap is True
    assert read(users, broadcasts, since=0).gap is False
    assert read(users, broadcasts).gap is False
    # A watermark handed out in the epoch's first millisecond.
    assert read(users, broadcasts, since=EPOCH.started_ms - 1).gap is False


def test_a_full_page_by_cursor_resumes_exactly_after_its_last_message():
    users, broadcasts = two_queues()
    for order in range(1, 6):
        users.add(order=order, timestamp=2_000 + order)

    first = read(users, broadcasts, cursor=Position(EPOCH.id, 0, 0), limit=2)
    rest = read(users, broadcasts, cursor=first.position)

    assert first.has_more
    assert ids(first) + ids(rest) == [f"user{n}" for n in range(1, 6)]


# Dropped broadcasts of other topics -------------------------------------------------


def test_an_expired_topic_broadcast_is_no_gap_for_pollers_of_other_topics(
    api_client, user, store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    start = poll(api_client, topics="ops")
    sync = get_realtime_sync()
    sync.broadcast("announcement", {"n": 0}, topics=["sales"])
    clock.advance(11)
    sync.broadcast("announcement", {"n": 1})

    for position in ({"cursor": start["cursor"]}, {"since": start["timestamp"]}):
        body = poll(api_client, topics="ops", **position)
        assert payloads(body) == [{"n": 1}]
        assert body["gap"] is False
        assert poll(api_client, topics="sales", **position)["gap"] is True
