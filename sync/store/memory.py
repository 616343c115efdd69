"""The in-memory message store: the embedded default, one process's own.

Every queue lives in this process and is gone when it exits (a restart
starts a new epoch: old cursors are recognised and replayed from what is
left). One lock guards the store, so the event loop and Django's worker
threads share it; every critical section is short. The whole store is
bounded by ``STORE_MAX_BYTES``: past it the oldest messages of any queue go
first, charged what they really hold (their encoded text, never parsed
objects, and a fixed overhead; see ``sync.store.base``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import Any

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.store.base import (
    MAX_TRACKED_DROP_TOPICS,
    MessageStore,
    StoreStats,
    message_size,
)
from sync.store.bus import LocalBus
from sync.store.cursors import Position
from sync.store.envelopes import Draft, EnvelopeParts
from sync.store.paging import (
    BROADCAST,
    NOTHING_DROPPED,
    USER,
    DropMark,
    Epoch,
    PageRequest,
    ReadResult,
    StoredMessage,
    read_page,
)
from sync.store.presence import LocalPresence
from sync.store.waiting import Waiters

# What a dropped message still costs while the byte ledger remembers it (a
# tuple and a deque slot), until the ledger pops it.
STALE_ENTRY_BYTES = 100


class _ByteLedger:
    """Every stored message in publication order, charged against a byte budget.

    When a new message takes the total past ``STORE_MAX_BYTES``, the oldest
    messages of the whole store go first, from whichever queue holds them;
    their queues record the drop, so readers behind them get a gap. A message
    dropped otherwise (TTL, overflow) keeps a stale charge of
    ``STALE_ENTRY_BYTES`` until it reaches the front and is popped, so the
    ledger itself never outgrows the budget: at most
    ``STORE_MAX_BYTES / STALE_ENTRY_BYTES`` entries.
    """

    __slots__ = ("charged", "entries")

    def __init__(self) -> None:
        self.entries: deque[tuple[_Queue, int]] = deque()
        self.charged = 0

    def charge(self, queue: _Queue, entry: StoredMessage) -> None:
        """Count a new message (before it is appended to `queue`)."""
        self.entries.append((queue, entry.seq))
        self.charged += entry.size

    def release(self, entry: StoredMessage) -> None:
        """`entry` left its queue; only its ledger slot stays charged."""
        self.charged -= entry.size - STALE_ENTRY_BYTES

    def enforce(self, max_bytes: int) -> int:
        """Drop the store's oldest messages until within budget; return how many."""
        dropped = 0
        while self.charged > max_bytes and self.entries:
            queue, seq = self.entries.popleft()
            self.charged -= STALE_ENTRY_BYTES
            if queue.holds(seq):
                queue.drop_oldest()  # the oldest of the store is its queue's oldest
                dropped += 1
        return dropped

    def pop_stale(self) -> None:
        """Forget messages at the front that their queues already dropped."""
        while self.entries and not self.entries[0][0].holds(self.entries[0][1]):
            self.entries.popleft()
            self.charged -= STALE_ENTRY_BYTES


class _Queue:
    """One queue's messages and counters; guarded by the store's lock."""

    __slots__ = ("dropped", "entries", "last_seq", "last_timestamp", "ledger")

    def __init__(self, ledger: _ByteLedger) -> None:
        self.entries: deque[StoredMessage] = deque()
        self.ledger = ledger
        self.last_seq = 0  # sequence of the newest message ever added
        self.last_timestamp = 0
        self.dropped = NOTHING_DROPPED  # newest message dropped, for any reason

    def append(self, entry: StoredMessage, max_messages: int) -> int:
        """Add `entry`; drop the oldest beyond `max_messages`; return drops."""
        self.entries.append(entry)
        dropped = 0
        while len(self.entries) > max_messages:
            self.drop_oldest()
            dropped += 1
        return dropped

    def drop_expired(self, now: float) -> int:
        """Drop expired messages (always the oldest); return how many."""
        dropped = 0
        while self.entries and self.entries[0].expires_at <= now:
            self.drop_oldest()
            dropped += 1
        return dropped

    def count_expired(self, now: float) -> int:
        """How many messages drop_expired would drop now."""
        count = 0
        for entry in self.entries:
            if entry.expires_at > now:
                break
            count += 1
        return count

    def drop_all(self) -> int:
        """Drop every message (oldest first); return how many."""
        count = len(self.entries)
        for _ in range(count):
            self.drop_oldest()
        return count

    def drop_oldest(self) -> None:
        """Drop the oldest message, remembering it for gap checks."""
        entry = self.entries.popleft()
        self.ledger.release(entry)
        self._record_drop(entry)

    def _record_drop(self, entry: StoredMessage) -> None:
        self.dropped = DropMark(entry.seq, entry.timestamp)

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        """Every reader of a user queue sees all of it."""
        return self.dropped

    def holds(self, seq: int) -> bool:
        """True if message `seq` is still stored (sequences are contiguous)."""
        return bool(self.entries) and self.entries[0].seq <= seq <= self.last_seq

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


class _BroadcastQueue(_Queue):
    """The broadcast queue, which remembers its drops by audience.

    A reader lost something only if a dropped broadcast would have reached
    it: an untargeted one, or one for a topic it follows. So a topic
    broadcast expiring never reports a gap to readers of other topics.
    """

    __slots__ = ("dropped_by_topic", "dropped_untargeted", "dropped_untracked")

    def __init__(self, ledger: _ByteLedger) -> None:
        super().__init__(ledger)
        self.dropped_untargeted = NOTHING_DROPPED
        # Insertion order is mark order: a topic is moved to the end whenever
        # its mark rises, and each new mark is the newest drop of the queue.
        self.dropped_by_topic: dict[str, DropMark] = {}
        self.dropped_untracked = NOTHING_DROPPED  # topics folded past the bound

    def _record_drop(self, entry: StoredMessage) -> None:
        super()._record_drop(entry)
        topics = entry.topics
        if not topics:
            self.dropped_untargeted = self.dropped
            self._forget_topic_marks_below(self.dropped.seq)
            return
        for topic in topics:
            self.dropped_by_topic.pop(topic, None)
            self.dropped_by_topic[topic] = self.dropped
        while len(self.dropped_by_topic) > MAX_TRACKED_DROP_TOPICS:
            oldest = next(iter(self.dropped_by_topic))
            mark = self.dropped_by_topic.pop(oldest)
            self.dropped_untracked = max(self.dropped_untracked, mark)

    def _forget_topic_marks_below(self, seq: int) -> None:
        # Every reader counts the untargeted mark, so older topic marks add
        # nothing; dropping them keeps the dict small in mixed traffic.
        while self.dropped_by_topic:
            oldest = next(iter(self.dropped_by_topic))
            if self.dropped_by_topic[oldest].seq > seq:
                return
            del self.dropped_by_topic[oldest]

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        """Newest drop among the broadcasts a reader of `topics` receives."""
        if not topics:
            return self.dropped_untargeted
        by_topic = self.dropped_by_topic
        marks = [by_topic[topic] for topic in topics if topic in by_topic]
        return max(self.dropped_untargeted, self.dropped_untracked, *marks)


class MemoryMessageStore(MessageStore):
    """Process-local store: the embedded default, gone when the process exits.

    One ``threading.Lock`` guards everything, so the event loop and Django's
    worker threads can share the store; every critical section is short.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # The clock in ms as last read, held from stepping back (NTP), so
        # watermarks and stamps always agree.
        self._clock_ms = int(clock() * 1000)
        self._epoch = Epoch(secrets.token_hex(4), self._clock_ms)
        self.epoch = self._epoch.id
        self._ledger = _ByteLedger()
        self._users: dict[str, _Queue] = {}
        self._broadcast = _BroadcastQueue(self._ledger)
        self._order = 0
        self._last_timestamp = 0
        self._last_sweep = clock()
        self._waiters = Waiters()
        self.instance_id = secrets.token_hex(8)
        self.presence = LocalPresence()
        self.bus = LocalBus()

    def add_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Stamp and append under the lock, then wake matching long polls."""
        draft = message if isinstance(message, Draft) else Draft.of(message)
        user_id = draft.user_id
        parts = draft.parts()
        with self._lock:
            now = self._clock()
            self._sweep_if_due(now)
            queue = self._broadcast if user_id is None else self._user_queue(user_id)
            entry = self._stamp(draft, parts, queue, now)
            self._ledger.charge(queue, entry)
            overflow = queue.append(entry, sync_settings.QUEUE_MAX_MESSAGES)
            evicted = self._ledger.enforce(sync_settings.STORE_MAX_BYTES)
        metrics.count(metrics.DROPPED_OVERFLOW, overflow)
        metrics.count(metrics.DROPPED_STORE_FULL, evicted)
        self._waiters.wake(user_id)
        return entry

    def _stamp(
        self, draft: Draft, parts: EnvelopeParts, queue: _Queue, now: float
    ) -> StoredMessage:
        timestamp = self._next_timestamp(queue, now)
        self._last_timestamp = max(self._last_timestamp, timestamp)
        queue.last_timestamp = timestamp
        self._order += 1
        queue.last_seq += 1
        is_broadcast = queue is self._broadcast
        cursor = Position(self.epoch, queue.last_seq, self._broadcast.last_seq)
        prefix, suffix = parts.with_timestamp(timestamp)
        return StoredMessage(
            queue=BROADCAST if is_broadcast else USER,
            seq=queue.last_seq,
            order=self._order,
            timestamp=timestamp,
            expires_at=now + sync_settings.MESSAGE_TTL,
            user_id=draft.user_id,
            topics=draft.topics,
            prefix=prefix,
            suffix=suffix,
            publish_cursor=None if is_broadcast else cursor.encode(),
            size=message_size(parts),
        )

    def _next_timestamp(self, queue: _Queue, now: float) -> int:
        """The clock, pushed just past what any reader of `queue` already holds.

        Every reader sees its user queue and the broadcast queue, so a user
        message goes after both, and a broadcast after every message stored.
        Each reader's messages are then strictly increasing in publication
        order, and a watermark (see paging) is never reached by a later one;
        a hot user queue only pushes its own and later broadcasts' stamps.
        """
        if queue is self._broadcast:
            return max(self._tick(now), self._last_timestamp + 1)
        after = max(queue.last_timestamp, self._broadcast.last_timestamp) + 1
        return max(self._tick(now), after)

    def _tick(self, now: float) -> int:
        """The clock in ms, never below an earlier reading (lock held)."""
        self._clock_ms = max(self._clock_ms, int(now * 1000))
        return self._clock_ms

    def read(
        self,
        user_id: str,
        *,
        since: int | None = None,
        cursor: Position | None = None,
        topics: Collection[str] = (),
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> ReadResult:
        """One page for a reader; see ReadResult for what each field means."""
        request = PageRequest(since, cursor, frozenset(topics), limit, max_bytes)
        with self._lock:
            now = self._clock()
            self._sweep_if_due(now)
            user_queue = self._users.get(str(user_id)) or _Queue(self._ledger)
            expired = user_queue.drop_expired(now) + self._broadcast.drop_expired(now)
            metrics.count(metrics.DROPPED_EXPIRED, expired)
            return read_page(
                self._epoch, user_queue, self._broadcast, request, self._tick(now)
            )

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

    def purge_messages(
        self,
        user_id: str | None = None,
        *,
        expired_only: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Drop (or count) a user's messages, or every queue's; see MessageStore."""
        with self._lock:
            now = self._clock()
            if user_id is None:
                queues = [self._broadcast, *self._users.values()]
            else:
                queues = [self._users.get(str(user_id)) or _Queue(self._ledger)]
            if dry_run:
                if expired_only:
                    return sum(queue.count_expired(now) for queue in queues)
                return sum(len(queue.entries) for queue in queues)
            if expired_only:
                dropped = sum(queue.drop_expired(now) for queue in queues)
            else:
                dropped = sum(queue.drop_all() for queue in queues)
            self._ledger.pop_stale()
            return dropped

    def stats(self) -> StoreStats:
        """Counts over non-empty queues (``broadcast`` names the shared one)."""
        with self._lock:
            self._sweep_if_due(self._clock())
            sizes = {key: len(q.entries) for key, q in self._users.items() if q.entries}
            if self._broadcast.entries:
                sizes[BROADCAST] = len(self._broadcast.entries)
            total = sum(sizes.values())
            return StoreStats(len(sizes), total, sizes, self._ledger.charged)

    async def wait_for_messages(
        self, user_id: str, position: Position, timeout: float
    ) -> bool:
        """Park until a message lands in either queue, or `timeout` passes."""
        key = str(user_id)
        waiter = self._waiters.add(key)  # before the check: no lost wake-up
        try:
            with self._lock:
                if self._moved_past(key, position):
                    return True
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
            return bool(done)
        finally:
            waiter.future.cancel()
            self._waiters.discard(key, waiter)

    def _moved_past(self, key: str, position: Position) -> bool:
        user_queue = self._users.get(key)
        user_seq = user_queue.last_seq if user_queue else 0
        return (
            position.epoch != self.epoch
            or user_seq > position.user_seq
            or self._broadcast.last_seq > position.broadcast_seq
        )

    def _user_queue(self, user_id: str) -> _Queue:
        # Queue state outlives its messages so sequence numbers never restart
        # and old cursors stay meaningful.
        key = str(user_id)
        queue = self._users.get(key)
        if queue is None:
            queue = self._users[key] = _Queue(self._ledger)
        return queue

    def _sweep_if_due(self, now: float) -> None:
        if now - self._last_sweep >= sync_settings.CLEANUP_INTERVAL:
            self._purge_expired(now)

    def _purge_expired(self, now: float) -> int:
        self._last_sweep = now
        dropped = self._broadcast.drop_expired(now)
        for queue in self._users.values():
            dropped += queue.drop_expired(now)
        self._ledger.pop_stale()
        metrics.count(metrics.DROPPED_EXPIRED, dropped)
        return dropped
