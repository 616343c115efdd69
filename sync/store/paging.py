"""Paging rules every store backend shares.

A reader sees two queues: its own user queue and the broadcast queue. This
module decides, from a consistent view of both (taken under a backend's lock,
or in one Redis transaction), where a read starts, whether messages the
reader would have seen after that point were dropped, how the two queues
merge in publication order, where a page ends, and which timestamp the
reader passes back as its next `since`. It only computes: backends own the
storage, the stamping and the locking, and describe each queue through the
small `QueueView` protocol.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from sync.store.cursors import Position

USER = "user"
BROADCAST = "broadcast"
# Bytes a reader's cursor adds to a message's text, counted against a page's
# byte bound ("<epoch>-<user seq>-<broadcast seq>" in quotes, generously).
CURSOR_BYTES = 48


@dataclass(slots=True)
class StoredMessage:
    """A message with the position the store gave it, as encoded text.

    ``prefix`` and ``suffix`` are the client envelope's JSON around the
    value of its ``cursor`` field, which depends on the reader (see
    ``sync.store.envelopes``). An entry whose text was not fetched (a
    broadcast the reader cannot see, passed over by a Redis read) has both
    empty: only its position matters.
    """

    queue: str  # USER or BROADCAST
    seq: int  # 1, 2, 3… within its queue
    order: int  # store-wide publication order, to merge the two queues
    timestamp: int  # ms; strictly increasing within a queue
    expires_at: float  # clock seconds
    user_id: str | None  # the recipient; None for a broadcast
    topics: tuple[str, ...]  # a broadcast's audience; () = everyone
    prefix: bytes = b""
    suffix: bytes = b""
    # For a user message, the position just after it in its user's stream;
    # a broadcast's position depends on each reader's own queue.
    publish_cursor: str | None = None
    size: int = 0  # bytes charged against the store's memory budget

    def visible_to(self, topics: Collection[str]) -> bool:
        """True if a reader subscribed to `topics` should receive it."""
        return not self.topics or any(topic in topics for topic in self.topics)

    def text_for(self, cursor: str) -> bytes:
        """The client envelope's JSON, with the reader's cursor after it."""
        return b'%s"%s"%s' % (self.prefix, cursor.encode(), self.suffix)

    @property
    def text_size(self) -> int:
        """Bytes of the client envelope, the reader's cursor included."""
        return len(self.prefix) + len(self.suffix) + CURSOR_BYTES

    @property
    def envelope(self) -> dict[str, Any]:
        """The client envelope as a dict, with no cursor (Python callers)."""
        return orjson.loads(self.prefix + b"null" + self.suffix)

    def for_reader(self, position: Position) -> dict[str, Any]:
        """The client envelope as a dict, with the reader's cursor after it."""
        return orjson.loads(self.text_for(position.encode()))


@dataclass(slots=True)
class ReadResult:
    """One page of a reader's messages, oldest first."""

    picked: list[tuple[StoredMessage, Position]]  # each with its reader cursor
    position: Position  # where the next read resumes
    timestamp: int  # watermark: pass back as `since`
    has_more: bool
    gap: bool  # messages after the requested position were dropped

    @property
    def count(self) -> int:
        """Messages in the page."""
        return len(self.picked)

    def frames(self) -> list[bytes]:
        """Each message's JSON, as sent to clients, spliced from stored text."""
        return [entry.text_for(after.encode()) for entry, after in self.picked]

    def parse_messages(self) -> list[dict[str, Any]]:
        """The messages as dicts, parsed now: for Python callers, never on
        the serving path (a page may hold a megabyte of JSON)."""
        return [entry.for_reader(after) for entry, after in self.picked]


class DropMark(NamedTuple):
    """The newest dropped message of some kind: its sequence and timestamp.

    Both grow together within a queue, so comparing marks compares either.
    """

    seq: int
    timestamp: int


NOTHING_DROPPED = DropMark(0, -1)


class QueueView(Protocol):
    """What paging needs to know about one queue."""

    @property
    def last_seq(self) -> int:
        """Sequence of the newest message ever added (0 when none)."""

    @property
    def last_timestamp(self) -> int:
        """Timestamp of the newest message ever added (0 when none)."""

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        """The newest dropped message a reader of `topics` would have seen.

        May err late (a newer mark) but never early, or losses go unnoticed.
        """

    def seq_at_or_before(self, timestamp: int) -> int:
        """Sequence of the newest message stamped at or before `timestamp`."""

    def after(self, seq: int) -> Iterable[StoredMessage]:
        """Retained messages with a sequence above `seq`, oldest first."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a reader asks for; `cursor` wins over `since`.

    A page holds at most `limit` messages and at most `max_bytes` of their
    text (always at least one message); None: no byte bound.
    """

    since: int | None
    cursor: Position | None
    topics: frozenset[str] = field(default_factory=frozenset)
    limit: int = 100
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Epoch:
    """The store's history: its id, and when (clock ms) it began."""

    id: str
    started_ms: int

    def predates(self, since: int) -> bool:
        """True if `since` lies before this history: what came after it is gone.

        A watermark handed out in the epoch's first millisecond is one below
        its start, so that value still counts as inside the history.
        """
        return 0 < since < self.started_ms - 1


def read_page(
    epoch: Epoch,
    users: QueueView,
    broadcasts: QueueView,
    request: PageRequest,
    now_ms: int,
) -> ReadResult:
    """One page for a reader; see ReadResult for what each field means.

    `now_ms` is the backend's clock, which must never step back: messages
    are stamped at or after it, so the watermark can stand one below it.
    """
    return _Page(epoch, users, broadcasts, request).read(now_ms)


class _Page:
    """Reads one page from a user queue and the broadcast queue."""

    def __init__(
        self,
        epoch: Epoch,
        users: QueueView,
        broadcasts: QueueView,
        request: PageRequest,
    ) -> None:
        self.epoch = epoch
        self.users = users
        self.broadcasts = broadcasts
        self.request = request

    def read(self, now_ms: int) -> ReadResult:
        start, gap = self._start()
        picked, full = self._pick(start)
        if full:
            picked, watermark = self._cut(picked)
            position = picked[-1][1]
        else:
            position = self._head()
            watermark = self._watermark(now_ms)
        return ReadResult(
            picked=picked,
            position=position,
            timestamp=watermark,
            has_more=full,
            gap=gap,
        )

    def _head(self) -> Position:
        return Position(self.epoch.id, self.users.last_seq, self.broadcasts.last_seq)

    def _start(self) -> tuple[Position, bool]:
        """Where reading starts, and whether messages after it were dropped."""
        cursor = self.request.cursor
        if cursor is None:
            return self._start_at_since(self.request.since or 0)
        if not self._trusts(cursor):
            # Not a position in this store's history: replay all it holds.
            return Position(self.epoch.id, 0, 0), True
        users, broadcasts = self._dropped()
        gap = users.seq > cursor.user_seq or broadcasts.seq > cursor.broadcast_seq
        return cursor, gap

    def _start_at_since(self, since: int) -> tuple[Position, bool]:
        start = Position(
            self.epoch.id,
            self.users.seq_at_or_before(since),
            self.broadcasts.seq_at_or_before(since),
        )
        users, broadcasts = self._dropped()
        gap = (
            self.epoch.predates(since)
            or users.timestamp > since
            or broadcasts.timestamp > since
        )
        return start, gap

    def _trusts(self, cursor: Position) -> bool:
        return (
            cursor.epoch == self.epoch.id
            and cursor.user_seq <= self.users.last_seq
            and cursor.broadcast_seq <= self.broadcasts.last_seq
        )

    def _dropped(self) -> tuple[DropMark, DropMark]:
        """Newest drops this reader would have seen, per queue."""
        topics = self.request.topics
        return self.users.dropped_for(topics), self.broadcasts.dropped_for(topics)

    def _pick(
        self, start: Position
    ) -> tuple[list[tuple[StoredMessage, Position]], bool]:
        """Visible messages after `start` with their cursors; True if full.

        A full page stops one message past a bound (the count `limit`, or
        `max_bytes` of text once it holds a message): that message shows
        there is more, and `_cut` takes it off. A cursor also moves past the
        broadcasts the reader cannot see, so a drop among them is never
        taken for a loss of this reader's.
        """
        merged = heapq.merge(
            self.users.after(start.user_seq),
            self.broadcasts.after(start.broadcast_seq),
            key=lambda entry: entry.order,
        )
        limit, max_bytes = self.request.limit, self.request.max_bytes
        picked: list[tuple[StoredMessage, Position]] = []
        position = start
        size = 0
        for entry in merged:
            if entry.queue == BROADCAST:
                position = position.after_broadcast(entry.seq)
                if not entry.visible_to(self.request.topics):
                    continue
            else:
                position = position.after_user(entry.seq)
            picked.append((entry, position))
            size += entry.text_size
            if len(picked) > limit or (
                max_bytes is not None and size > max_bytes and len(picked) > 1
            ):
                return picked, True
        return picked, False

    def _cut(
        self, picked: list[tuple[StoredMessage, Position]]
    ) -> tuple[list[tuple[StoredMessage, Position]], int]:
        """A full page and its watermark, from the page and one message more."""
        limit = len(picked) - 1
        if self.request.cursor is None:
            page = cut_at_timestamp_boundary(picked, limit)
            return page, page[-1][0].timestamp
        # A cursor marks the exact spot; only the watermark must step back if
        # the next message shares the last one's millisecond.
        page = picked[:limit]
        last, following = page[-1][0].timestamp, picked[limit][0].timestamp
        return page, last if following > last else last - 1

    def _watermark(self, now_ms: int) -> int:
        """A `since` for the next poll: nothing later can be stamped at or below.

        Later messages are stamped at or after `now_ms` and above the last
        stamp of their queue. The reader's own `since` plays no part: it is a
        read position, never a clock.
        """
        return max(
            now_ms - 1, self.users.last_timestamp, self.broadcasts.last_timestamp
        )


def cut_at_timestamp_boundary(
    picked: list[tuple[StoredMessage, Position]], limit: int
) -> list[tuple[StoredMessage, Position]]:
    """Trim to `limit` without splitting messages that share a timestamp.

    Timestamps are unique within a queue, so a tie is one user message and one
    broadcast; splitting it would make the watermark skip the second one.
    """
    if len(picked) <= limit:
        return picked
    page = picked[:limit]
    boundary = picked[limit][0].timestamp
    if page[-1][0].timestamp != boundary:
        return page
    trimmed = [item for item in page if item[0].timestamp != boundary]
    return trimmed or picked[: limit + 1]
