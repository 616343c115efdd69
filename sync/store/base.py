"""The message store's interface: what every backend provides.

The store keeps one queue per user plus one broadcast queue, each bounded by
``QUEUE_MAX_MESSAGES`` and ``MESSAGE_TTL``, and all of them together by
``STORE_MAX_BYTES``. It assigns every message its position (queue sequence,
store-wide order, timestamp) together with the append, which is what makes
`since` and `cursor` lossless under concurrent publishing; only the
server's clock and the store's own counters decide a stamp. The paging
rules every backend shares live in ``sync.store.paging``.

Beside the messages a store has two companions of other jobs: its
``presence`` (the server instances sharing it, and their sockets) and its
``bus`` (other instances' messages and revocations, as they happen).
Callers depend on these interfaces only: ``sync.store.memory`` and
``sync.store.redis`` implement them.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sync.store.bus import Bus
from sync.store.cursors import Position
from sync.store.envelopes import Draft, EnvelopeParts
from sync.store.paging import ReadResult, StoredMessage
from sync.store.presence import Presence

# Bytes charged per stored message on top of its encoded text: the
# StoredMessage, its two bytes objects, its topics and cursor, the deque and
# ledger slots (about 450 bytes measured, see tests/sync/store/test_memory.py).
# The text is kept encoded, never as parsed objects, so the charge follows
# the memory a message really holds whatever its payload's shape.
ENTRY_OVERHEAD_BYTES = 512
# Topics whose newest dropped broadcast is remembered one by one. Past this
# many, the longest-remembered topic is folded into one shared mark that
# every reader following any topic counts as a drop it may have missed: the
# conservative rule, which can report a gap that was not this reader's.
MAX_TRACKED_DROP_TOPICS = 10_000


def message_size(message: dict[str, Any] | Draft | EnvelopeParts) -> int:
    """Bytes a message is charged against ``STORE_MAX_BYTES``."""
    if isinstance(message, dict):
        message = Draft.of(message, getattr(message, "payload_json", None))
    parts = message.parts() if isinstance(message, Draft) else message
    text = len(parts.head) + len(parts.middle) + len(parts.tail)
    return text + ENTRY_OVERHEAD_BYTES


@dataclass(slots=True)
class StoreStats:
    """Queue and message counts for status pages and metrics."""

    total_queues: int
    total_messages: int
    queue_sizes: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0  # charged against STORE_MAX_BYTES


class MessageStore(abc.ABC):
    """What every store backend provides; the rest of the project uses only this.

    Async twins default to calling the sync methods, which suits a backend
    that never blocks; a backend doing network I/O overrides them.
    """

    epoch: str
    # Names this process among the instances sharing a store (Redis).
    instance_id: str
    # True when several instances share this store (their figures add up).
    shared = False
    # Its companions: the instances' figures, and the bus between them.
    presence: Presence
    bus: Bus

    @abc.abstractmethod
    def add_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Append to the recipient's queue (``userId``; None = broadcast).

        A dict is the envelope of the contract (its ``payload`` is encoded
        here); the service hands a Draft, its payload encoded already.
        """

    @abc.abstractmethod
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
        """Messages for `user_id` after `cursor` (else after `since` ms), at
        most `limit` of them and `max_bytes` of their text (at least one)."""

    @abc.abstractmethod
    def head(self, user_id: str) -> Position:
        """The reader's position right now: after everything stored."""

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Drop expired messages from every queue; return how many."""

    @abc.abstractmethod
    def purge_messages(
        self,
        user_id: str | None = None,
        *,
        expired_only: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Drop the messages of `user_id`'s queue (None: of every queue,
        broadcasts included), or only the expired ones; return how many.

        With `dry_run` nothing is dropped: the count is what would be.
        Dropped messages count as lost, so readers behind them get a gap.
        """

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
        return result.parse_messages()

    async def aadd_message(self, message: dict[str, Any] | Draft) -> StoredMessage:
        """Async twin of add_message."""
        return self.add_message(message)

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
        return self.read(
            user_id,
            since=since,
            cursor=cursor,
            topics=topics,
            limit=limit,
            max_bytes=max_bytes,
        )

    async def ahead(self, user_id: str) -> Position:
        """Async twin of head."""
        return self.head(user_id)

    async def astats(self) -> StoreStats:
        """Async twin of stats."""
        return self.stats()
