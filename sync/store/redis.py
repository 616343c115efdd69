"""The Redis backend of the message store, shared by every server instance.

Same queues, limits and positions as the memory store, kept in one Redis so
any instance serves any reader with the same cursors. Every change (stamp
and append, drops, the clock) happens inside a Lua script from
``sync/services/lua/``, so instances never interleave halfway; reads take a
consistent view of both of a reader's queues in one script and hand it to
the shared paging rules of ``sync.store.paging``.

Redis must keep every key it is given (``maxmemory-policy noeviction``, the
default): an evicted key would tear a queue apart. Memory stays bounded by
``QUEUE_MAX_MESSAGES`` and ``MESSAGE_TTL`` per queue, by ``STORE_MAX_BYTES``
for all queues together (the oldest messages of the whole store go first,
as in the memory store), plus one small hash per user ever written to (it
keeps sequences from restarting, as the memory store does).

Messages are kept as their envelope's JSON text (``sync.store.envelopes``)
and read back as bytes, never parsed: a read only splits each entry's
header from its text.

Long polls wake without polling: every append publishes its queue's name
on one pub/sub channel, and each store object holds one subscription (a
thread, started by the first long poll) that wakes the matching local
waiters, whichever instance appended. A (re)subscription wakes every waiter
once, to re-check what was published while it was not listening. The same
subscription hands other instances' messages to the local delivery hub
(`deliver_remote_to`), for live WebSocket delivery, and, on a second channel,
every process's revocations (a deleted token, a deactivated user) to the
service layer (`hear_revocations`), so every process drops its cached token
and closes its sockets at once, whether or not it holds a socket of that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import NEVER_DECODE
from redis.retry import Retry

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.store import memory as message_queue
from sync.store.cursors import Position
from sync.store.envelopes import Draft, EnvelopeParts
from sync.store.failures import unavailable_when_down
from sync.store.memory import (
    ClusterConnections,
    InstanceFigures,
    MessageStore,
    StoreStats,
    _Waiter,
)
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

LUA_DIR = Path(__file__).with_name("lua")
# Store commands never block server-side, so a reply slower than this means
# Redis is in trouble: answer 503 rather than hold the request.
SOCKET_TIMEOUT_SECONDS = 2.0
SOCKET_CONNECT_TIMEOUT_SECONDS = 1.0
# Idle pooled connections are pinged before reuse after this long, so a
# Redis restart costs a reconnect instead of an error.
HEALTH_CHECK_INTERVAL_SECONDS = 15
# One retry, soon after: enough to replace a pooled connection that died
# with a restarted Redis, short enough to answer 503 fast while Redis is
# down. Safe for appends too: append.lua is idempotent by message id.
RETRIES = 1
RETRY_BACKOFF = ExponentialWithJitterBackoff(cap=0.2, base=0.05)
# Connections one event loop holds at most. One broadcast wakes every long
# poll and every socket with a hole to fill at the same moment: past this
# many, a command waits for a free connection (up to POOL_WAIT_SECONDS)
# instead of failing, as redis-py's default pool of 100 does (503 or 1011).
ASYNC_POOL_CONNECTIONS = 50
POOL_WAIT_SECONDS = 5.0
# How long the wake-up listener blocks reading its subscription before it
# checks whether it was asked to stop.
LISTEN_POLL_SECONDS = 1.0
# Pause before subscribing again after Redis dropped the subscription.
RESUBSCRIBE_DELAY_SECONDS = 1.0
BROADCAST_QUEUE = "b"  # the broadcast queue's name in Redis keys
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
# An instance that has not reported its sockets for this long is taken for
# dead and left out of the cluster's figures (instances report every 2 s).
INSTANCE_SILENCE_SECONDS = 15
logger = logging.getLogger(__name__)


def _script_source(name: str) -> str:
    """A script with the shared helpers in front (Redis has no includes)."""
    common = (LUA_DIR / "common.lua").read_text()
    return common + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def _mark(seq: Any, timestamp: Any) -> DropMark:
    """A DropMark from Redis hash values (absent = nothing dropped)."""
    if seq is None:
        return NOTHING_DROPPED
    return DropMark(int(seq), int(timestamp))


def _entry(raw: bytes, queue: str, user_id: str | None = None) -> StoredMessage:
    """One stored entry, its text split out, never parsed (lua/common.lua).

    A broadcast the reader cannot see comes back as its first two lines
    only: its position matters, its text is left in Redis. `user_id` is the
    recipient of a user message, where the caller needs it (the hub).
    """
    lines = raw.split(b"\n", 4)
    seq, order, timestamp, expires_ms = map(int, lines[0].split(b" "))
    topics = tuple(orjson.loads(lines[1])) if lines[1] != b"[]" else ()
    prefix = suffix = b""
    if len(lines) == 5:
        head, middle, suffix = lines[2:]
        prefix = b"%s%d%s" % (head, timestamp, middle)
    elif len(lines) == 3:
        prefix, suffix = _legacy_text(lines[2], timestamp)
    return StoredMessage(
        queue=queue,
        seq=seq,
        order=order,
        timestamp=timestamp,
        expires_at=expires_ms / 1000,
        user_id=user_id,
        topics=topics,
        prefix=prefix,
        suffix=suffix,
        size=len(raw),
    )


def _legacy_text(envelope_json: bytes, timestamp: int) -> tuple[bytes, bytes]:
    """The text of an entry an older release stored (one JSON envelope line).

    Entries live for MESSAGE_TTL, so these only meet a rolling upgrade.
    """
    parts = Draft.of(orjson.loads(envelope_json)).parts()
    return parts.with_timestamp(timestamp)


def _cluster(figures: list[str | None], opened: str | None) -> ClusterConnections:
    """Sum the other instances' "active subscriptions" figures."""
    pairs = [tuple(map(int, value.split(" "))) for value in figures if value]
    return ClusterConnections(
        active=sum(active for active, _ in pairs),
        subscriptions=sum(subscriptions for _, subscriptions in pairs),
        opened=int(opened or 0),
    )


def _counted_read(reply: list[Any]) -> list[Any]:
    """A read script's reply, once its expired messages are counted as dropped."""
    metrics.count(metrics.DROPPED_EXPIRED, int(reply[9]))
    return reply


def _epoch(value: str | bytes) -> Epoch:
    if isinstance(value, bytes):
        value = value.decode()
    epoch_id, started_ms = value.split(" ")
    return Epoch(epoch_id, int(started_ms))


@dataclass(slots=True)
class _QueueSnapshot:
    """One queue as the read script saw it; a paging QueueView.

    ``since_seq`` answers seq_at_or_before for this read's own `since` only:
    the script looked it up, and paging asks for nothing else.
    """

    last_seq: int
    last_timestamp: int
    dropped: DropMark
    since_seq: int
    entries: list[StoredMessage]

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        """Every reader of a user queue sees all of it."""
        return self.dropped

    def seq_at_or_before(self, timestamp: int) -> int:
        """Where this read's `since` starts in the queue."""
        return self.since_seq

    def after(self, seq: int) -> Iterable[StoredMessage]:
        """Fetched entries above `seq`, oldest first."""
        return (entry for entry in self.entries if entry.seq > seq)


@dataclass(slots=True)
class _BroadcastSnapshot(_QueueSnapshot):
    """The broadcast queue, with its drops by audience (as the memory store)."""

    untargeted: DropMark = NOTHING_DROPPED
    untracked: DropMark = NOTHING_DROPPED
    by_topic: dict[str, DropMark] = field(default_factory=dict)

    def dropped_for(self, topics: frozenset[str]) -> DropMark:
        """Newest drop among the broadcasts a reader of `topics` receives."""
        if not topics:
            return self.untargeted
        marks = [self.by_topic[topic] for topic in topics if topic in self.by_topic]
        return max(self.untargeted, self.untracked, *marks)


class _Waiters:
    """Long polls of this process, woken by publishes through this store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, set[_Waiter]] = {}

    def add(self, key: str) -> _Waiter:
        waiter = _Waiter()
        with self._lock:
            self._by_user.setdefault(key, set()).add(waiter)
        return waiter

    def discard(self, key: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._by_user.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_user[key]

    def wake_queue(self, queue: str) -> None:
        """Wake the readers of a queue named as in Redis ("b", "u:<id>")."""
        self.wake(None if queue == BROADCAST_QUEUE else queue.removeprefix("u:"))

    def wake(self, user_id: str | None) -> None:
        """A broadcast may concern anyone; a user message only that user."""
        with self._lock:
            if user_id is None:
                waiters = [w for group in self._by_user.values() for w in group]
            else:
                waiters = list(self._by_user.get(str(user_id), ()))
        for waiter in waiters:
            waiter.wake()


class _SharedCalls:
    """Identical reads asked for in one turn of the event loop share one
    round trip.

    One broadcast wakes every long poll and socket of this process at once,
    most of them asking the same thing (the head of one user, the same page).
    The call is sent at the next turn, after every caller of this turn
    joined, so its answer is as fresh as each of them needs; a caller of a
    later turn starts a new one.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[Any, ...], asyncio.Task] = {}

    async def run(self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]):
        """`call()`'s answer, shared with the callers of this turn asking `key`."""
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._send(key, call))
            task.add_done_callback(_retrieve)
            self._pending[key] = task
        return await asyncio.shield(task)  # one caller leaving stops no other

    async def _send(self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]):
        del self._pending[key]  # from now on, callers need a fresher answer
        return await call()


def _retrieve(task: asyncio.Task) -> None:
    """Mark a shared call's error as seen: each caller got it already."""
    if not task.cancelled():
        task.exception()


class RemoteDelivery(Protocol):
    """What the store hands other instances' messages to (the delivery hub)."""

    def dispatch_threadsafe(self, entry: StoredMessage) -> None: ...

    def catch_up_all(self) -> None: ...


class RevocationListener(Protocol):
    """What hears the revocations any process publishes (the service layer)."""

    def revoked(self, user_id: str, token_key: str | None) -> None: ...

    def revocations_missed(self) -> None: ...


class _WakeListener(threading.Thread):
    """The one subscription of a store object: wakes its long polls, hands
    other instances' messages to this process's hub, and revocations to the
    service layer.

    A thread rather than a task: long polls run on whichever event loop
    serves them, and waking a waiter is thread-safe.
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        store: RedisMessageStore,
        revoke_channel: str,
    ) -> None:
        super().__init__(name="sync-store-wake", daemon=True)
        self._client = client
        self._channel = channel
        self._revoke_channel = revoke_channel
        self._waiters = store._waiters
        self._store = store
        self._stopping = threading.Event()
        self._lost = False  # the subscription failed and is not back yet
        self._pubsub: redis.client.PubSub | None = None

    def stop(self) -> None:
        """Ask the thread to end; it does within LISTEN_POLL_SECONDS."""
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            # The listener outlives any error; meanwhile waits end at their
            # timeout, and the next subscription wakes them all to re-check.
            except Exception:
                if not self._lost:  # once per outage, not once per retry
                    logger.warning("store wake-up subscription lost; retrying")
                self._lost = True
                self._stopping.wait(RESUBSCRIBE_DELAY_SECONDS)

    def _listen(self) -> None:
        self._pubsub = pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self._channel, self._revoke_channel)
            while not self._stopping.is_set():
                event = pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
                if event is not None:
                    self._handle(event)
        finally:
            pubsub.close()

    def _handle(self, event: dict[str, Any]) -> None:
        if event["channel"] == self._revoke_channel.encode():
            self._store._heard_revocation(event)
        elif event["type"] == "subscribe":
            self._lost = False
            self._waiters.wake(None)  # re-check what came while not listening
            self._store._resubscribed()
        elif event["type"] == "message":
            # "<queue>\n<instance>\n<entry>", as bytes: the text is passed on.
            queue_name, _, published = event["data"].partition(b"\n")
            queue = queue_name.decode()
            self._waiters.wake_queue(queue)
            source, _, raw = published.partition(b"\n")
            if raw and source.decode() != self._store.instance_id:
                if queue == BROADCAST_QUEUE:
                    entry = _entry(raw, BROADCAST)
                else:
                    entry = _entry(raw, USER, queue.removeprefix("u:"))
                self._store._deliver_remote(entry)


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
        self._url = url
        self._prefix = prefix
        self._clock = clock
        self._client = redis.Redis.from_url(
            url, retry=Retry(RETRY_BACKOFF, RETRIES), **self._client_options()
        )
        self._sources = {
            name: _script_source(name)
            for name in ("append", "read", "head", "purge", "purge_queues", "stats")
        }
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in self._sources.items()
        }
        # One asyncio client per thread, for the loop that thread runs now:
        # a redis.asyncio connection belongs to the loop that opened it.
        self._local = threading.local()
        self._epoch_seen = ""
        self._last_sweep = clock()
        self._waiters = _Waiters()
        self._listener: _WakeListener | None = None
        self._listener_lock = threading.Lock()
        # Tells this process's own publications from other instances'.
        self.instance_id = secrets.token_hex(8)
        self._remote: RemoteDelivery | None = None
        self._revoke_channel = f"{prefix}revoke"
        self._revocations: RevocationListener | None = None

    @property
    def epoch(self) -> str:
        """The cluster's epoch id, as last seen in Redis ("" before any call)."""
        return self._epoch_seen

    @staticmethod
    def _client_options() -> dict[str, Any]:
        return {
            "decode_responses": True,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT_SECONDS,
            "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
        }

    # Running scripts ---------------------------------------------------------

    def _run(self, name: str, *args: Any) -> Any:
        with unavailable_when_down():
            return self._scripts[name](args=[self._prefix, *args])

    def _run_raw(self, name: str, *args: Any) -> Any:
        """`_run`, its reply left as bytes (message text is never decoded)."""
        values = [self._prefix, *args]
        raw = {NEVER_DECODE: []}
        with unavailable_when_down():
            try:
                return self._client.execute_command(
                    "EVALSHA", self._scripts[name].sha, 0, *values, **raw
                )
            except redis.exceptions.NoScriptError:
                return self._client.execute_command(
                    "EVAL", self._sources[name], 0, *values, **raw
                )

    async def _arun_shared(
        self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Await `call()`, shared with this turn's callers asking the same `key`."""
        self._async_client()  # this loop's client and shared calls
        return await self._local.shared.run(key, call)

    async def _arun(self, name: str, *args: Any, raw: bool = False) -> Any:
        """Run a script on this loop's client; `raw`: leave its reply as bytes."""
        client = self._async_client()
        values = [self._prefix, *args]
        options = {NEVER_DECODE: []} if raw else {}
        with unavailable_when_down():
            try:
                sha = self._scripts[name].sha
                return await client.execute_command(
                    "EVALSHA", sha, 0, *values, **options
                )
            except redis.exceptions.NoScriptError:
                return await client.execute_command(
                    "EVAL", self._sources[name], 0, *values, **options
                )

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if getattr(self._local, "loop", None) is not loop:
            # Only one client per thread is kept: an older loop's is dropped.
            self._local.loop = loop
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self._url,
                max_connections=ASYNC_POOL_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                retry=AsyncRetry(RETRY_BACKOFF, RETRIES),
                **self._client_options(),
            )
            self._local.client = redis.asyncio.Redis.from_pool(pool)
            self._local.shared = _SharedCalls()
        return self._local.client

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
        reply = self._run("append", *self._append_args(draft, parts, now))
        return self._appended(draft, parts, reply, now)

    async def aadd_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Async twin of add_message."""
        draft = message if isinstance(message, Draft) else Draft.of(message)
        parts = draft.parts()
        now = self._clock()
        await self._asweep_if_due(now)
        reply = await self._arun("append", *self._append_args(draft, parts, now))
        return self._appended(draft, parts, reply, now)

    def _append_args(self, draft: Draft, parts: EnvelopeParts, now: float) -> list[Any]:
        user_id = draft.user_id
        return [
            self._new_epoch_id(),
            self._now_ms(now),
            int(sync_settings.MESSAGE_TTL * 1000),
            sync_settings.QUEUE_MAX_MESSAGES,
            message_queue.MAX_TRACKED_DROP_TOPICS,
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
        self._epoch_seen = _epoch(epoch).id
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
            size=message_queue.message_size(parts),
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
        reply = _counted_read(
            self._run_raw("read", *self._read_args(user_id, request, now))
        )
        return self._page(str(user_id), request, reply)

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
        reply = await self._arun_shared(key, lambda: self._arun_read(args))
        return self._page(str(user_id), request, reply)

    async def _arun_read(self, args: list[Any]) -> list[Any]:
        """One read script call; what it expired is counted once, however many
        callers share its reply."""
        return _counted_read(await self._arun("read", *args, raw=True))

    def _read_args(self, user_id: str, request: PageRequest, now: float) -> list[Any]:
        cursor = request.cursor
        if cursor is None:
            start = ["since", str(int(request.since or 0)), 0, 0]
        else:
            start = ["cursor", cursor.epoch, cursor.user_seq, cursor.broadcast_seq]
        return [
            self._new_epoch_id(),
            self._now_ms(now),
            message_queue.MAX_TRACKED_DROP_TOPICS,
            str(user_id),
            *start,
            request.limit,
            json.dumps(sorted(request.topics)),
            request.max_bytes or 0,
        ]

    def _page(self, user_id: str, request: PageRequest, reply: list[Any]) -> ReadResult:
        epoch_value, clock, user_state, broadcast_state, marks = reply[:5]
        user_from, broadcast_from, users, broadcasts, _expired = reply[5:]
        epoch = _epoch(epoch_value)
        self._epoch_seen = epoch.id
        user_queue = _QueueSnapshot(
            last_seq=int(user_state[0] or 0),
            last_timestamp=int(user_state[1] or 0),
            dropped=_mark(user_state[2], user_state[3]),
            since_seq=int(user_from),
            entries=[_entry(raw, USER, user_id) for raw in users],
        )
        broadcast_queue = self._broadcast_snapshot(
            broadcast_state, marks, request, int(broadcast_from), broadcasts
        )
        return read_page(epoch, user_queue, broadcast_queue, request, int(clock))

    @staticmethod
    def _broadcast_snapshot(
        state: list[Any],
        marks: list[Any],
        request: PageRequest,
        since_seq: int,
        entries: list[bytes],
    ) -> _BroadcastSnapshot:
        topics = sorted(request.topics)  # the order the script was given
        by_topic = {
            topic: _mark(*mark.split(b" "))
            for topic, mark in zip(topics, marks, strict=True)
            if mark
        }
        return _BroadcastSnapshot(
            last_seq=int(state[0] or 0),
            last_timestamp=int(state[1] or 0),
            dropped=_mark(state[2], state[3]),
            since_seq=since_seq,
            entries=[_entry(raw, BROADCAST) for raw in entries],
            untargeted=_mark(state[4], state[5]),
            untracked=_mark(state[6], state[7]),
            by_topic=by_topic,
        )

    def head(self, user_id: str) -> Position:
        """After everything stored for `user_id`."""
        now_ms = self._now_ms(self._clock())
        reply = self._run("head", self._new_epoch_id(), now_ms, str(user_id))
        return self._position(reply)

    async def ahead(self, user_id: str) -> Position:
        """Async twin of head."""
        now_ms = self._now_ms(self._clock())
        key = ("head", str(user_id))
        args = (self._new_epoch_id(), now_ms, str(user_id))
        reply = await self._arun_shared(key, lambda: self._arun("head", *args))
        return self._position(reply)

    def _position(self, reply: list[Any]) -> Position:
        epoch, user_seq, broadcast_seq = reply
        self._epoch_seen = _epoch(epoch).id
        return Position(self._epoch_seen, int(user_seq), int(broadcast_seq))

    # Upkeep and figures ------------------------------------------------------

    def purge_expired(self) -> int:
        """Drop expired messages from every queue, a batch of queues at a time."""
        now = self._clock()
        self._last_sweep = now
        visited, total = PURGE_BATCH_QUEUES, 0
        while visited == PURGE_BATCH_QUEUES:
            dropped, visited = self._run("purge", *self._purge_args(now))
            total += int(dropped)
        metrics.count(metrics.DROPPED_EXPIRED, total)
        return total

    async def apurge_expired(self) -> int:
        """Async twin of purge_expired."""
        now = self._clock()
        self._last_sweep = now
        visited, total = PURGE_BATCH_QUEUES, 0
        while visited == PURGE_BATCH_QUEUES:
            dropped, visited = await self._arun("purge", *self._purge_args(now))
            total += int(dropped)
        metrics.count(metrics.DROPPED_EXPIRED, total)
        return total

    def _purge_args(self, now: float) -> list[Any]:
        return [
            self._now_ms(now),
            message_queue.MAX_TRACKED_DROP_TOPICS,
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
            args = [now_ms, message_queue.MAX_TRACKED_DROP_TOPICS, *mode]
            return int(self._run("purge_queues", *args, f"u:{user_id}", 1, 0)[0])
        # Queues that exist now, and no more: while senders keep filling new
        # ones, a loop until a short batch might never end.
        with unavailable_when_down():
            queues_now = self._client.zcard(f"{self._prefix}expiry")
        batches = queues_now // PURGE_ALL_BATCH_QUEUES
        visited, offset, total = PURGE_ALL_BATCH_QUEUES, 0, 0
        for _ in range(batches + 1):
            if visited < PURGE_ALL_BATCH_QUEUES:
                break
            dropped, visited = self._run(
                "purge_queues",
                now_ms,
                message_queue.MAX_TRACKED_DROP_TOPICS,
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
        return self._stats(self._run("stats", STATS_LISTED_QUEUES))

    async def astats(self) -> StoreStats:
        """Async twin of stats."""
        await self._asweep_if_due(self._clock())
        return self._stats(await self._arun("stats", STATS_LISTED_QUEUES))

    @staticmethod
    def _stats(reply: list[Any]) -> StoreStats:
        queues, messages, listed, charged = reply
        sizes: dict[str, int] = {}
        for name, size in zip(listed[::2], listed[1::2], strict=True):
            key = BROADCAST if name == BROADCAST_QUEUE else name.removeprefix("u:")
            sizes[key] = int(size)
        return StoreStats(int(queues), int(messages), sizes, int(charged))

    # The cluster's sockets -----------------------------------------------------

    def _instance_keys(self, instance_id: str) -> tuple[str, str, str]:
        return (
            f"{self._prefix}instances",  # sorted set: instance -> last report ms
            f"{self._prefix}instance:{instance_id}",  # its "active subscriptions"
            f"{self._prefix}opened",  # sockets opened, cluster-wide
        )

    async def areport_connections(
        self, instance_id: str, active: int, subscriptions: int, opened: int
    ) -> None:
        """Publish this instance's figures; they expire if it stops reporting."""
        live, figures, opened_key = self._instance_keys(instance_id)
        silence_ms = INSTANCE_SILENCE_SECONDS * 1000
        async with self._async_client().pipeline(transaction=False) as pipe:
            pipe.set(figures, f"{active} {subscriptions}", px=silence_ms)
            pipe.zadd(live, {instance_id: self._now_ms(self._clock())})
            if opened:
                pipe.incrby(opened_key, opened)
            with unavailable_when_down():
                await pipe.execute()

    def connections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """The other live instances' last figures, and the cluster's opened."""
        with unavailable_when_down():
            others = self._live_instances(self._client, instance_id)
            figures = self._client.mget(others) if others else []
            opened = self._client.get(self._instance_keys(instance_id)[2])
        return _cluster(figures, opened)

    async def aconnections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """Async twin of connections_elsewhere."""
        client = self._async_client()
        with unavailable_when_down():
            others = await self._alive_instances(client, instance_id)
            figures = await client.mget(others) if others else []
            opened = await client.get(self._instance_keys(instance_id)[2])
        return _cluster(figures, opened)

    def forget_connections(self, instance_id: str) -> None:
        """Drop this instance's figures at once (it is shutting down)."""
        live, figures, _ = self._instance_keys(instance_id)
        with contextlib.suppress(redis.RedisError):
            self._client.zrem(live, instance_id)
            self._client.delete(figures)

    def live_instances(self) -> list[InstanceFigures]:
        """Every instance that reported within INSTANCE_SILENCE_SECONDS."""
        live = f"{self._prefix}instances"
        with unavailable_when_down():
            self._client.zremrangebyscore(live, 0, self._silence_cutoff_ms())
            reported = self._client.zrange(live, 0, -1, withscores=True)
            keys = [self._instance_keys(name)[1] for name, _ in reported]
            figures = self._client.mget(keys) if keys else []
        return [
            InstanceFigures(name, *map(int, value.split(" ")), int(reported_at))
            for (name, reported_at), value in zip(reported, figures, strict=True)
            if value  # its figures expired: it stopped reporting
        ]

    def _live_instances(self, client: redis.Redis, instance_id: str) -> list[str]:
        live = self._instance_keys(instance_id)[0]
        client.zremrangebyscore(live, 0, self._silence_cutoff_ms())
        return self._figure_keys(client.zrange(live, 0, -1), instance_id)

    async def _alive_instances(self, client, instance_id: str) -> list[str]:
        live = self._instance_keys(instance_id)[0]
        await client.zremrangebyscore(live, 0, self._silence_cutoff_ms())
        return self._figure_keys(await client.zrange(live, 0, -1), instance_id)

    def _silence_cutoff_ms(self) -> int:
        return self._now_ms(self._clock()) - INSTANCE_SILENCE_SECONDS * 1000

    def _figure_keys(self, instances: list[str], instance_id: str) -> list[str]:
        return [
            self._instance_keys(other)[1] for other in instances if other != instance_id
        ]

    # Waiting -----------------------------------------------------------------

    async def wait_for_messages(
        self, user_id: str, position: Position, timeout: float
    ) -> bool:
        """Park until either queue moves past `position`, or `timeout` passes.

        Any instance's append wakes the wait through the subscription; the
        head is then read again, so a wake-up for another reason costs one
        round trip and nothing else.
        """
        self._ensure_listener()
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

    def deliver_remote_to(self, delivery: RemoteDelivery) -> None:
        """Hand messages other instances append to `delivery` (the hub).

        `delivery.dispatch_threadsafe(entry)` gets each one, from the
        listener thread; `delivery.catch_up_all()` runs when the subscription
        is back after a loss, since messages published meanwhile never came.
        A message lost on the way is also caught by its queue sequence at
        the next one, or at the socket's next heartbeat.
        """
        self._remote = delivery
        self._ensure_listener()

    def _deliver_remote(self, entry: StoredMessage) -> None:
        if self._remote is not None:
            self._remote.dispatch_threadsafe(entry)

    def _resubscribed(self) -> None:
        if self._remote is not None:
            self._remote.catch_up_all()

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None:
                channel = f"{self._prefix}wake"
                # Its own client, whose messages stay bytes: entries pass
                # through to the hub undecoded.
                client = redis.Redis.from_url(
                    self._url, **{**self._client_options(), "decode_responses": False}
                )
                self._listener = _WakeListener(
                    client, channel, self, self._revoke_channel
                )
                self._listener.start()

    # Revocations ---------------------------------------------------------------

    def hear_revocations(self, listener: RevocationListener) -> None:
        """Hand every process's revocations to `listener`, from the listener
        thread: `revoked(user_id, token_key)` for each (token_key None: all of
        the user's), and `revocations_missed()` whenever the subscription
        starts or comes back, since those published meanwhile never came.
        """
        self._revocations = listener
        self._ensure_listener()

    def publish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Tell every process on this Redis, this one included."""
        with unavailable_when_down():
            self._client.publish(self._revoke_channel, json.dumps([user_id, token_key]))

    async def apublish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Async twin of publish_revocation."""
        message = json.dumps([user_id, token_key])
        with unavailable_when_down():
            await self._async_client().publish(self._revoke_channel, message)

    def _heard_revocation(self, event: dict[str, Any]) -> None:
        listener = self._revocations
        if listener is None:
            return
        if event["type"] == "subscribe":
            listener.revocations_missed()
        elif event["type"] == "message":
            try:
                user_id, token_key = json.loads(event["data"])
            except (ValueError, TypeError):  # not ours: the subscription goes on
                logger.warning("malformed revocation ignored")
                return
            listener.revoked(str(user_id), token_key)

    async def aclose(self) -> None:
        """Close this loop's connections and stop the listener (tests)."""
        client = getattr(self._local, "client", None)
        if client is not None and self._local.loop is asyncio.get_running_loop():
            await client.aclose()
            self._local.loop = self._local.client = None
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the wake-up listener (tests; a server keeps its store)."""
        with self._listener_lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener.join(LISTEN_POLL_SECONDS * 2)
                self._listener = None

    @staticmethod
    def _moved_past(head: Position, position: Position) -> bool:
        return (
            head.epoch != position.epoch
            or head.user_seq > position.user_seq
            or head.broadcast_seq > position.broadcast_seq
        )
