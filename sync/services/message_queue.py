"""The message store: its interface, and the in-memory backend.

The store keeps one queue per user plus one broadcast queue, each bounded by
``QUEUE_MAX_MESSAGES`` and ``MESSAGE_TTL``. It assigns every message its
position (queue sequence, store-wide order, timestamp) under one lock together
with the append, which is what makes `since` and `cursor` lossless under
concurrent publishing. Callers depend on ``MessageStore`` only; the Redis
backend implements the same interface.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import heapq
import itertools
import secrets
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from sync.conf import sync_settings
from sync.services.cursors import Position

USER = "user"
BROADCAST = "broadcast"


@dataclass(slots=True)
class StoredMessage:
    """A message with the position the store gave it."""

    envelope: dict[str, Any]  # what clients receive, minus the per-reader cursor
    queue: str  # USER or BROADCAST
    seq: int  # 1, 2, 3… within its queue
    order: int  # store-wide publication order, to merge the two queues
    expires_at: float  # clock seconds
    # For a user message, the position just after it in its user's stream;
    # a broadcast's position depends on each reader's own queue.
    publish_cursor: str | None = None

    @property
    def timestamp(self) -> int:
        """Milliseconds; strictly increasing within a queue."""
        return self.envelope["timestamp"]

    def visible_to(self, topics: Collection[str]) -> bool:
        """True if a reader subscribed to `topics` should receive it."""
        message_topics = self.envelope["topics"]
        return not message_topics or any(topic in topics for topic in message_topics)

    def for_reader(self, position: Position) -> dict[str, Any]:
        """The client envelope, stamped with the reader's cursor after it."""
        return {**self.envelope, "cursor": position.encode()}


@dataclass(slots=True)
class ReadResult:
    """One page of a reader's messages, oldest first."""

    messages: list[dict[str, Any]]
    position: Position  # where the next read resumes
    timestamp: int  # watermark: pass back as `since`
    has_more: bool
    gap: bool  # messages after the requested position were dropped


@dataclass(slots=True)
class StoreStats:
    """Queue and message counts for status pages and metrics."""

    total_queues: int
    total_messages: int
    queue_sizes: dict[str, int] = field(default_factory=dict)


class MessageStore(abc.ABC):
    """What every store backend provides; the rest of the project uses only this.

    Async twins default to calling the sync methods, which suits a backend
    that never blocks; a backend doing network I/O overrides them.
    """

    epoch: str

    @abc.abstractmethod
    def add_message(self, message: dict[str, Any]) -> StoredMessage:
        """Append to the recipient's queue (``userId``; None = broadcast)."""

    @abc.abstractmethod
    def read(
        self,
        user_id: str,
        *,
        since: int | None = None,
        cursor: Position | None = None,
        topics: Collection[str] = (),
        limit: int = 100,
    ) -> ReadResult:
        """Messages for `user_id` after `cursor` (else after `since` ms)."""

    @abc.abstractmethod
    def head(self, user_id: str) -> Position:
        """The reader's position right now: after everything stored."""

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Drop expired messages from every queue; return how many."""

    @abc.abstractmethod
    def stats(self) -> StoreStats:
        """Non-empty queues, stored messages, and per-queue sizes."""

    @abc.abstractmethod
    async def wait_for_messages(
        self, user_id: str, position: Position, timeout: float
    ) -> bool:
        """Wait until either queue of `user_id` moves past `position`."""

    def get_messages_since(
        self, user_id: str, since: int, topics: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """All of a user's retained messages published after `since` ms."""
        result = self.read(user_id, since=since, topics=topics, limit=10**9)
        return result.messages

    async def aadd_message(self, message: dict[str, Any]) -> StoredMessage:
        """Async twin of add_message."""
        return self.add_message(message)

    async def aread(self, user_id: str, **options: Any) -> ReadResult:
        """Async twin of read."""
        return self.read(user_id, **options)

    async def ahead(self, user_id: str) -> Position:
        """Async twin of head."""
        return self.head(user_id)

    async def astats(self) -> StoreStats:
        """Async twin of stats."""
        return self.stats()


class _Queue:
    """One queue's messages and counters; guarded by the store's lock."""

    __slots__ = (
        "dropped_seq",
        "dropped_timestamp",
        "entries",
        "last_seq",
        "last_timestamp",
    )

    def __init__(self) -> None:
        self.entries: deque[StoredMessage] = deque()
        self.last_seq = 0  # sequence of the newest message ever added
        self.last_timestamp = 0
        self.dropped_seq = 0  # newest sequence dropped by TTL or overflow
        self.dropped_timestamp = -1

    def append(self, entry: StoredMessage, max_messages: int) -> int:
        """Add `entry`; drop the oldest beyond `max_messages`; return drops."""
        self.entries.append(entry)
        dropped = 0
        while len(self.entries) > max_messages:
            self._drop_oldest()
            dropped += 1
        return dropped

    def drop_expired(self, now: float) -> int:
        """Drop expired messages (always the oldest); return how many."""
        dropped = 0
        while self.entries and self.entries[0].expires_at <= now:
            self._drop_oldest()
            dropped += 1
        return dropped

    def _drop_oldest(self) -> None:
        entry = self.entries.popleft()
        self.dropped_seq = entry.seq
        self.dropped_timestamp = entry.timestamp

    def seq_at_or_before(self, timestamp: int) -> int:
        """Sequence of the newest retained message at or before `timestamp`."""
        if not self.entries:
            return self.last_seq
        index = bisect_right(self.entries, timestamp, key=lambda entry: entry.timestamp)
        return self.entries[0].seq + index - 1

    def after(self, seq: int) -> Iterator[StoredMessage]:
        """Retained messages with a sequence above `seq`, oldest first."""
        if not self.entries:
            return iter(())
        start = max(seq - self.entries[0].seq + 1, 0)
        return itertools.islice(self.entries, start, None)


class _Waiter:
    """A long poll parked on the event loop that created it."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def wake(self) -> None:
        """Resolve the future from any thread."""
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class MemoryMessageStore(MessageStore):
    """Process-local store: the embedded default, gone when the process exits.

    One ``threading.Lock`` guards everything, so the event loop and Django's
    worker threads can share the store; every critical section is short.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.epoch = secrets.token_hex(4)
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, _Queue] = {}
        self._broadcast = _Queue()
        self._order = 0
        self._last_timestamp = 0
        # No message may be stamped at or below a watermark already handed out.
        self._timestamp_floor = 0
        self._last_sweep = clock()
        self._waiters: dict[str, set[_Waiter]] = {}

    def add_message(self, message: dict[str, Any]) -> StoredMessage:
        """Stamp and append under the lock, then wake matching long polls."""
        user_id = message.get("userId")
        with self._lock:
            now = self._clock()
            self._sweep_if_due(now)
            queue = self._broadcast if user_id is None else self._user_queue(user_id)
            entry = self._stamp(message, queue, now)
            queue.append(entry, sync_settings.QUEUE_MAX_MESSAGES)
            waiters = self._take_waiters(user_id)
        for waiter in waiters:
            waiter.wake()
        return entry

    def _stamp(
        self, message: dict[str, Any], queue: _Queue, now: float
    ) -> StoredMessage:
        # Timestamps never go back store-wide and strictly increase per queue,
        # so `since` can split pages without skipping or repeating a message.
        timestamp = max(
            int(now * 1000),
            self._last_timestamp,
            queue.last_timestamp + 1,
            self._timestamp_floor,
        )
        self._last_timestamp = queue.last_timestamp = timestamp
        self._order += 1
        queue.last_seq += 1
        is_broadcast = queue is self._broadcast
        cursor = Position(self.epoch, queue.last_seq, self._broadcast.last_seq)
        return StoredMessage(
            envelope={**message, "timestamp": timestamp},
            queue=BROADCAST if is_broadcast else USER,
            seq=queue.last_seq,
            order=self._order,
            expires_at=now + sync_settings.MESSAGE_TTL,
            publish_cursor=None if is_broadcast else cursor.encode(),
        )

    def read(
        self,
        user_id: str,
        *,
        since: int | None = None,
        cursor: Position | None = None,
        topics: Collection[str] = (),
        limit: int = 100,
    ) -> ReadResult:
        """One page for a reader; see ReadResult for what each field means."""
        with self._lock:
            now = self._clock()
            self._sweep_if_due(now)
            user_queue = self._users.get(str(user_id)) or _Queue()
            for queue in (user_queue, self._broadcast):
                queue.drop_expired(now)
            return _Page(self, user_queue, since, cursor, topics, limit).read(now)

    def head(self, user_id: str) -> Position:
        """After everything stored for `user_id`."""
        with self._lock:
            user_queue = self._users.get(str(user_id))
            user_seq = user_queue.last_seq if user_queue else 0
            return Position(self.epoch, user_seq, self._broadcast.last_seq)

    def purge_expired(self) -> int:
        """Drop expired messages from every queue."""
        with self._lock:
            return self._purge_expired(self._clock())

    def stats(self) -> StoreStats:
        """Counts over non-empty queues (``broadcast`` names the shared one)."""
        with self._lock:
            self._sweep_if_due(self._clock())
            sizes = {key: len(q.entries) for key, q in self._users.items() if q.entries}
            if self._broadcast.entries:
                sizes[BROADCAST] = len(self._broadcast.entries)
            return StoreStats(len(sizes), sum(sizes.values()), sizes)

    async def wait_for_messages(
        self, user_id: str, position: Position, timeout: float
    ) -> bool:
        """Park until a message lands in either queue, or `timeout` passes."""
        key = str(user_id)
        waiter = _Waiter()
        with self._lock:
            if self._moved_past(key, position):
                return True
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
            return bool(done)
        finally:
            waiter.future.cancel()
            with self._lock:
                self._forget_waiter(key, waiter)

    def _moved_past(self, key: str, position: Position) -> bool:
        user_queue = self._users.get(key)
        user_seq = user_queue.last_seq if user_queue else 0
        return (
            position.epoch != self.epoch
            or user_seq > position.user_seq
            or self._broadcast.last_seq > position.broadcast_seq
        )

    def _forget_waiter(self, key: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]

    def _take_waiters(self, user_id: str | None) -> list[_Waiter]:
        # A broadcast may concern anyone; a user message only that user.
        if user_id is None:
            return [waiter for group in self._waiters.values() for waiter in group]
        return list(self._waiters.get(str(user_id), ()))

    def _user_queue(self, user_id: str) -> _Queue:
        # Queue state outlives its messages so sequence numbers never restart
        # and old cursors stay meaningful.
        key = str(user_id)
        queue = self._users.get(key)
        if queue is None:
            queue = self._users[key] = _Queue()
        return queue

    def _sweep_if_due(self, now: float) -> None:
        if now - self._last_sweep >= sync_settings.CLEANUP_INTERVAL:
            self._purge_expired(now)

    def _purge_expired(self, now: float) -> int:
        self._last_sweep = now
        dropped = self._broadcast.drop_expired(now)
        for queue in self._users.values():
            dropped += queue.drop_expired(now)
        return dropped

    def bump_timestamp_floor(self, watermark: int) -> None:
        """Make every later message newer than `watermark` (lock held)."""
        self._timestamp_floor = max(self._timestamp_floor, watermark + 1)


class _Page:
    """Reads one page from a user queue and the broadcast queue (lock held)."""

    def __init__(
        self,
        store: MemoryMessageStore,
        user_queue: _Queue,
        since: int | None,
        cursor: Position | None,
        topics: Collection[str],
        limit: int,
    ) -> None:
        self.store = store
        self.user_queue = user_queue
        self.broadcast_queue = store._broadcast
        self.since = since
        self.cursor = cursor
        self.topics = frozenset(topics)
        self.limit = limit

    def read(self, now: float) -> ReadResult:
        start, gap = self._start()
        picked = self._pick(start)
        has_more = len(picked) > self.limit
        if has_more:
            picked, watermark = self._cut(picked)
            position = picked[-1][1]
        else:
            position = Position(
                self.store.epoch,
                self.user_queue.last_seq,
                self.broadcast_queue.last_seq,
            )
            watermark = self._watermark(now)
        return ReadResult(
            messages=[entry.for_reader(after) for entry, after in picked],
            position=position,
            timestamp=watermark,
            has_more=has_more,
            gap=gap,
        )

    def _start(self) -> tuple[Position, bool]:
        """Where reading starts, and whether messages after it were dropped."""
        epoch = self.store.epoch
        users, broadcasts = self.user_queue, self.broadcast_queue
        if self.cursor is None:
            since = self.since or 0
            start = Position(
                epoch, users.seq_at_or_before(since), broadcasts.seq_at_or_before(since)
            )
            gap = max(users.dropped_timestamp, broadcasts.dropped_timestamp) > since
            return start, gap
        cursor = self.cursor
        if (
            cursor.epoch != epoch
            or cursor.user_seq > users.last_seq
            or cursor.broadcast_seq > broadcasts.last_seq
        ):
            # Not a position in this store's history: replay all it holds.
            return Position(epoch, 0, 0), True
        gap = (
            users.dropped_seq > cursor.user_seq
            or broadcasts.dropped_seq > cursor.broadcast_seq
        )
        return cursor, gap

    def _pick(self, start: Position) -> list[tuple[StoredMessage, Position]]:
        """Up to limit + 1 visible messages after `start`, with their cursors."""
        merged = heapq.merge(
            self.user_queue.after(start.user_seq),
            self.broadcast_queue.after(start.broadcast_seq),
            key=lambda entry: entry.order,
        )
        picked: list[tuple[StoredMessage, Position]] = []
        position = start
        for entry in merged:
            if entry.queue == BROADCAST:
                if not entry.visible_to(self.topics):
                    continue
                position = position.after_broadcast(entry.seq)
            else:
                position = position.after_user(entry.seq)
            picked.append((entry, position))
            if len(picked) > self.limit:
                break
        return picked

    def _cut(
        self, picked: list[tuple[StoredMessage, Position]]
    ) -> tuple[list[tuple[StoredMessage, Position]], int]:
        """A full page and its watermark, from `limit` + 1 picked messages."""
        if self.cursor is None:
            page = _cut_at_timestamp_boundary(picked, self.limit)
            return page, page[-1][0].timestamp
        # A cursor marks the exact spot; only the watermark must step back if
        # the next message shares the last one's millisecond.
        page = picked[: self.limit]
        last, following = page[-1][0].timestamp, picked[self.limit][0].timestamp
        return page, last if following > last else last - 1

    def _watermark(self, now: float) -> int:
        """A `since` for the next poll: nothing later can be stamped at or below."""
        watermark = max(
            int(now * 1000) - 1,
            self.since or 0,
            self.user_queue.last_timestamp,
            self.broadcast_queue.last_timestamp,
        )
        self.store.bump_timestamp_floor(watermark)
        return watermark


def _cut_at_timestamp_boundary(
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
