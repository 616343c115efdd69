"""One live reader's position, and the rules that make delivery exact.

A WebSocket connection receives messages two ways: live events from the
delivery hub, and reads from the store (resume, hole filling). The stream
decides for each live event whether it is next (deliver it), already seen
(drop it), or ahead of a hole (read the store first). Live events can arrive
out of order (publishes from several threads) or not at all (a lossy link
between processes), so a hole is filled from the store: a lost event arrives
late, never not at all, and never twice.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from sync.store.base import MessageStore
from sync.store.cursors import Position
from sync.store.paging import BROADCAST, ReadResult

# Messages per store read while replaying or filling a hole.
PAGE_SIZE = 500


class Verdict(enum.Enum):
    """What to do with a live event."""

    DELIVER = "deliver"
    DUPLICATE = "duplicate"  # already delivered (or replayed)
    SKIP = "skip"  # a broadcast for topics this reader left
    GAP = "gap"  # events before it were lost: read the store first


class ReaderStream:
    """Position of one reader in its user queue and the broadcast queue.

    `position` is the cursor after the last message this reader has looked
    at: delivered, or passed over because it was a broadcast for topics the
    reader does not follow. Cursors handed out therefore cover those skipped
    broadcasts too, exactly as the store's cursors do, so a dropped broadcast
    the reader could never see is never taken for one it lost.
    """

    def __init__(self, store: MessageStore, user_id: str, topics: Iterable[str] = ()):
        self.store = store
        self.user_id = user_id
        self.topics: set[str] = set(topics)
        self.position = Position(store.epoch, 0, 0)

    async def start(self, cursor: Position | None) -> Position:
        """Begin after `cursor`, or at the head; return the head now.

        A cursor of another epoch (or beyond the head) stays untrusted until
        read_page() replaces it with a position of this store.
        """
        head = await self.store.ahead(self.user_id)
        self.position = head if cursor is None else cursor
        return head

    async def read_page(self, max_bytes: int) -> ReadResult:
        """The next page of stored messages after the position, and move past it.

        One page at a time, at most PAGE_SIZE messages and `max_bytes` of
        text: the caller sends a page before it asks for the next, as fast
        as its client reads (``hasMore`` says whether to ask).
        """
        result = await self.store.aread(
            self.user_id,
            cursor=self.position,
            topics=self.topics,
            limit=PAGE_SIZE,
            max_bytes=max_bytes,
        )
        # The store's position also covers broadcasts this reader skips.
        self.position = result.position
        return result

    def judge(self, queue: str, seq: int, topics: list[str]) -> Verdict:
        """Classify a live event by its queue sequence number."""
        if self.position.epoch != self.store.epoch:
            return Verdict.GAP  # not yet resynced with this store's history
        if queue == BROADCAST:
            last = self.position.broadcast_seq
        else:
            last = self.position.user_seq
        if seq <= last:
            return Verdict.DUPLICATE
        if seq > last + 1:
            return Verdict.GAP
        if queue == BROADCAST and topics and self.topics.isdisjoint(topics):
            self.position = self.position.after_broadcast(seq)
            return Verdict.SKIP
        return Verdict.DELIVER

    def advance(self, queue: str, seq: int) -> str:
        """Move past a DELIVER event; return the reader's cursor after it."""
        if queue == BROADCAST:
            self.position = self.position.after_broadcast(seq)
        else:
            self.position = self.position.after_user(seq)
        return self.position.encode()

    def subscribe(self, topics: Iterable[str]) -> None:
        """Follow more topics from now on (older broadcasts are not replayed).

        Broadcasts already looked at stay behind the position, so a new topic
        does not pull in its earlier messages on the next store read.
        """
        self.topics.update(topics)

    def unsubscribe(self, topics: Iterable[str]) -> None:
        """Stop following topics."""
        self.topics.difference_update(topics)

    async def is_behind(self) -> bool:
        """True if the store holds messages this reader has not looked at."""
        head = await self.store.ahead(self.user_id)
        return (
            head.epoch != self.position.epoch
            or head.user_seq > self.position.user_seq
            or head.broadcast_seq > self.position.broadcast_seq
        )
