"""The Redis backend of the message store, shared by every server instance.

Same queues, limits and positions as the memory store, kept in one Redis so
any instance serves any reader with the same cursors. Every change (stamp
and append, drops, the clock) happens inside a Lua script from
``sync/store/lua/`` (run by ``redis_connection``), so instances never
interleave halfway; reads take a consistent view of both of a reader's
queues in one script, bounded by bytes, and hand it to the paging rules
every backend shares (``redis_entries``, ``sync.store.paging``).

Redis must keep every key it is given (``maxmemory-policy noeviction``, the
default): an evicted key would tear a queue apart. Memory stays bounded by
``QUEUE_MAX_MESSAGES`` and ``MESSAGE_TTL`` per queue, by ``STORE_MAX_BYTES``
for all queues together (the oldest messages of the whole store go first,
as in the memory store; each message is charged its text and what Redis
spends around it), plus one small hash per user ever written to (it keeps
sequences from restarting, as the memory store does).

Messages are kept as their envelope's JSON text (``sync.store.envelopes``)
and read back as bytes, never parsed. Long polls wake without polling,
through the store's one subscription (``redis_bus``), which is also the bus
between instances; the instances' socket figures are its ``presence``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Collection
from typing import Any

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.store.base import (
    MAX_TRACKED_DROP_TOPICS,
    MessageStore,
    StoreStats,
    message_size,
)
from sync.store.cursors import Position
from sync.store.envelopes import Draft, EnvelopeParts
from sync.store.failures import unavailable_when_down
from sync.store.paging import BROADCAST, USER, PageRequest, ReadResult, StoredMessage
from sync.store.redis_bus import RedisBus
from sync.store.redis_connection import RedisConnection
from sync.store.redis_entries import (
    BROADCAST_QUEUE,
    counted_read,
    epoch_of,
    page_of,
)
from sync.store.redis_presence import RedisPresence
from sync.store.waiting import Waiters

# Queues one purge script visits before handing Redis back to other clients;
# a sweep runs batches until one comes back short.
PURGE_BATCH_QUEUES = 500
# An operator's purge of every queue pops whole queues (up to MAX_MESSAGES
# each, several commands per message): a few queues per script keep each
# call to milliseconds, so publishes and polls of every instance go on.
PURGE_ALL_BATCH_QUEUES = 4
# Past this many non-empty queues, stats() gives totals only: listing each
# queue's size costs one command per queue inside Redis.
STATS_LISTED_QUEUES = 1000


class RedisMessageStore(MessageStore):
    """Message store in Redis: one history for every instance on `prefix`.

    `clock` decides every "now" (stamps, expiry, sweeps); it is passed into
    the scripts, which keep the cluster's clock from stepping back.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sync:store:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        self._redis = RedisConnection(url, prefix)
        self._epoch_seen = ""
        self._last_sweep = clock()
        self._waiters = Waiters()
        # Tells this process's own publications from other instances'.
        self.instance_id = secrets.token_hex(8)
        self.bus = RedisBus(self._redis, self._waiters, self.instance_id)
        self.presence = RedisPresence(self._redis, clock)

    @property
    def epoch(self) -> str:
        """The cluster's epoch id, as last seen in Redis ("" before any call)."""
        return self._epoch_seen

    def _now_ms(self, now: float) -> int:
        return int(now * 1000)

    def _new_epoch_id(self) -> str:
        """Offered on every call; Redis keeps the first one (SET NX)."""
        return secrets.token_hex(4)

    # Appending ---------------------------------------------------------------

    def add_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Stamp and append in one script, then wake this process's long polls."""
        draft = message if isinstance(message, Draft) else Draft.of(message)
        parts = draft.parts()
        now = self._clock()
        self._sweep_if_due(now)
        reply = self._redis.run("append", *self._append_args(draft, parts, now))
        return self._appended(draft, parts, reply, now)

    async def aadd_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Async twin of add_message."""
        draft = message if isinstance(message, Draft) else Draft.of(message)
        parts = draft.parts()
        now = self._clock()
        await self._asweep_if_due(now)
        reply = await self._redis.arun("append", *self._append_args(draft, parts, now))
        return self._appended(draft, parts, reply, now)

    def _append_args(self, draft: Draft, parts: EnvelopeParts, now: float) -> list[Any]:
        user_id = draft.user_id
        return [
            self._new_epoch_id(),
            self._now_ms(now),
            int(sync_settings.MESSAGE_TTL * 1000),
            sync_settings.QUEUE_MAX_MESSAGES,
            MAX_TRACKED_DROP_TOPICS,
            "b" if user_id is None else "u",
            "" if user_id is None else user_id,
            json.dumps(list(draft.topics)),
            b"\n".join((parts.head, parts.middle, parts.tail)),
            draft.id,
            self.instance_id,
            sync_settings.STORE_MAX_BYTES,
        ]

    def _appended(
        self, draft: Draft, parts: EnvelopeParts, reply: list[Any], now: float
    ) -> StoredMessage:
        epoch, seq, order, timestamp, broadcast_seq = reply[:5]
        # A repeated answer (a retried append) has no drop counts: none again.
        metrics.count(metrics.DROPPED_OVERFLOW, int(reply[5]) if reply[5:] else 0)
        metrics.count(metrics.DROPPED_STORE_FULL, int(reply[6]) if reply[6:] else 0)
        self._epoch_seen = epoch_of(epoch).id
        user_id = draft.user_id
        publish_cursor = None
        if user_id is not None:
            position = Position(self._epoch_seen, int(seq), int(broadcast_seq))
            publish_cursor = position.encode()
        self._waiters.wake(user_id)
        prefix, suffix = parts.with_timestamp(int(timestamp))
        return StoredMessage(
            queue=USER if user_id is not None else BROADCAST,
            seq=int(seq),
            order=int(order),
            timestamp=int(timestamp),
            expires_at=now + sync_settings.MESSAGE_TTL,
            user_id=user_id,
            topics=draft.topics,
            prefix=prefix,
            suffix=suffix,
            publish_cursor=publish_cursor,
            size=message_size(parts),
        )

    # Reading -----------------------------------------------------------------

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
        now = self._clock()
        self._sweep_if_due(now)
        reply = counted_read(
            self._redis.run_raw("read", *self._read_args(user_id, request, now))
        )
        return self._read_page(str(user_id), request, reply)

    async def aread(
        self,
        user_id: str,
        *,
        since: int | None = None,
        cursor: Position | None = None,
        topics: Collection[str] = (),
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> ReadResult:
        """Async twin of read."""
        request = PageRequest(since, cursor, frozenset(topics), limit, max_bytes)
        now = self._clock()
        await self._asweep_if_due(now)
        key = ("read", str(user_id), request)
        args = self._read_args(user_id, request, now)
        reply = await self._redis.arun_shared(key, lambda: self._arun_read(args))
        return self._read_page(str(user_id), request, reply)

    async def _arun_read(self, args: list[Any]) -> list[Any]:
        """One read script call; what it expired is counted once, however many
        callers share its reply."""
        return counted_read(await self._redis.arun("read", *args, raw=True))

    def _read_args(self, user_id: str, request: PageRequest, now: float) -> list[Any]:
        cursor = request.cursor
        if cursor is None:
            start = ["since", str(int(request.since or 0)), 0, 0]
        else:
            start = ["cursor", cursor.epoch, cursor.user_seq, cursor.broadcast_seq]
        return [
            self._new_epoch_id(),
            self._now_ms(now),
            MAX_TRACKED_DROP_TOPICS,
            str(user_id),
            *start,
            request.limit,
            json.dumps(sorted(request.topics)),
            request.max_bytes or 0,
        ]

    def head(self, user_id: str) -> Position:
        """After everything stored for `user_id`."""
        now_ms = self._now_ms(self._clock())
        reply = self._redis.run("head", self._new_epoch_id(), now_ms, str(user_id))
        return self._position(reply)

    async def ahead(self, user_id: str) -> Position:
        """Async twin of head."""
        now_ms = self._now_ms(self._clock())
        key = ("head", str(user_id))
        args = (self._new_epoch_id(), now_ms, str(user_id))
        reply = await self._redis.arun_shared(
            key, lambda: self._redis.arun("head", *args)
        )
        return self._position(reply)

    def _position(self, reply: list[Any]) -> Position:
        epoch, user_seq, broadcast_seq = reply
        self._epoch_seen = epoch_of(epoch).id
        return Position(self._epoch_seen, int(user_seq), int(broadcast_seq))

    # Upkeep and figures ------------------------------------------------------

    def purge_expired(self) -> int:
        """Drop expired messages from every queue, a batch of queues at a time."""
        now = self._clock()
        self._last_sweep = now
        visited, total = PURGE_BATCH_QUEUES, 0
        while visited == PURGE_BATCH_QUEUES:
            dropped, visited = self._redis.run("purge", *self._purge_args(now))
            total += int(dropped)
        metrics.count(metrics.DROPPED_EXPIRED, total)
        return total

    async def apurge_expired(self) -> int:
        """Async twin of purge_expired."""
        now = self._clock()
        self._last_sweep = now
        visited, total = PURGE_BATCH_QUEUES, 0
        while visited == PURGE_BATCH_QUEUES:
            dropped, visited = await self._redis.arun("purge", *self._purge_args(now))
            total += int(dropped)
        metrics.count(metrics.DROPPED_EXPIRED, total)
        return total

    def _purge_args(self, now: float) -> list[Any]:
        return [
            self._now_ms(now),
            MAX_TRACKED_DROP_TOPICS,
            PURGE_BATCH_QUEUES,
        ]

    def purge_messages(
        self,
        user_id: str | None = None,
        *,
        expired_only: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Drop (or count) a user's messages, or every queue's; see MessageStore."""
        if user_id is None and expired_only and not dry_run:
            return self.purge_expired()  # the expiry index finds them faster
        now_ms = self._now_ms(self._clock())
        mode = ["expired" if expired_only else "all", "1" if dry_run else "0"]
        if user_id is not None:
            args = [now_ms, MAX_TRACKED_DROP_TOPICS, *mode]
            return int(self._redis.run("purge_queues", *args, f"u:{user_id}", 1, 0)[0])
        # Queues that exist now, and no more: while senders keep filling new
        # ones, a loop until a short batch might never end.
        with unavailable_when_down():
            queues_now = self._redis.client.zcard(f"{self._prefix}expiry")
        batches = queues_now // PURGE_ALL_BATCH_QUEUES
        visited, offset, total = PURGE_ALL_BATCH_QUEUES, 0, 0
        for _ in range(batches + 1):
            if visited < PURGE_ALL_BATCH_QUEUES:
                break
            dropped, visited = self._redis.run(
                "purge_queues",
                now_ms,
                MAX_TRACKED_DROP_TOPICS,
                *mode,
                "",
                PURGE_ALL_BATCH_QUEUES,
                offset,
            )
            total += int(dropped)
            if dry_run:  # emptied queues leave the index; counted ones stay
                offset += PURGE_ALL_BATCH_QUEUES
        return total

    def _sweep_if_due(self, now: float) -> None:
        # Each instance sweeps on its own schedule; a sweep covers all queues.
        if now - self._last_sweep >= sync_settings.CLEANUP_INTERVAL:
            self.purge_expired()

    async def _asweep_if_due(self, now: float) -> None:
        if now - self._last_sweep >= sync_settings.CLEANUP_INTERVAL:
            await self.apurge_expired()

    def stats(self) -> StoreStats:
        """Counts over non-empty queues, for the whole cluster."""
        self._sweep_if_due(self._clock())
        return self._stats(self._redis.run("stats", STATS_LISTED_QUEUES))

    async def astats(self) -> StoreStats:
        """Async twin of stats."""
        await self._asweep_if_due(self._clock())
        return self._stats(await self._redis.arun("stats", STATS_LISTED_QUEUES))

    @staticmethod
    def _stats(reply: list[Any]) -> StoreStats:
        queues, messages, listed, charged = reply
        sizes: dict[str, int] = {}
        for name, size in zip(listed[::2], listed[1::2], strict=True):
            key = BROADCAST if name == BROADCAST_QUEUE else name.removeprefix("u:")
            sizes[key] = int(size)
        return StoreStats(int(queues), int(messages), sizes, int(charged))

    # Waiting -----------------------------------------------------------------

    async def wait_for_messages(
        self, user_id: str, position: Position, timeout: float
    ) -> bool:
        """Park until either queue moves past `position`, or `timeout` passes.

        Any instance's append wakes the wait through the subscription; the
        head is then read again, so a wake-up for another reason costs one
        round trip and nothing else.
        """
        self.bus.listen()
        key = str(user_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter = self._waiters.add(key)  # before the check: no lost wake-up
            try:
                if self._moved_past(await self.ahead(key), position):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.wait({waiter.future}, timeout=remaining)
            finally:
                waiter.future.cancel()
                self._waiters.discard(key, waiter)

    def _read_page(
        self, user_id: str, request: PageRequest, reply: list[Any]
    ) -> ReadResult:
        result = page_of(user_id, request, reply)
        self._epoch_seen = result.position.epoch
        return result

    async def aclose(self) -> None:
        """Close this loop's connections and stop the subscription (tests)."""
        await self._redis.aclose()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the subscription (tests; a server keeps its store)."""
        self.bus.close()

    @staticmethod
    def _moved_past(head: Position, position: Position) -> bool:
        return (
            head.epoch != position.epoch
            or head.user_seq > position.user_seq
            or head.broadcast_seq > position.broadcast_seq
        )
