"""Store entries as Redis holds them, read back without parsing their text.

An entry (layout in ``lua/common.lua``) is a header line, a topics line and
the envelope's text around its timestamp and cursor; a read splits it into
a ``StoredMessage`` and never parses the JSON. A read script's reply becomes
a page through the paging rules every backend shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sync.core import metrics
from sync.store.envelopes import Draft
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

BROADCAST_QUEUE = "b"  # the broadcast queue's name in Redis keys


def mark(seq: Any, timestamp: Any) -> DropMark:
    """A DropMark from Redis hash values (absent = nothing dropped)."""
    if seq is None:
        return NOTHING_DROPPED
    return DropMark(int(seq), int(timestamp))


def entry_of(raw: bytes, queue: str, user_id: str | None = None) -> StoredMessage:
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
        prefix, suffix = legacy_text(lines[2], timestamp)
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


def legacy_text(envelope_json: bytes, timestamp: int) -> tuple[bytes, bytes]:
    """The text of an entry an older release stored (one JSON envelope line).

    Entries live for MESSAGE_TTL, so these only meet a rolling upgrade.
    """
    parts = Draft.of(orjson.loads(envelope_json)).parts()
    return parts.with_timestamp(timestamp)


def counted_read(reply: list[Any]) -> list[Any]:
    """A read script's reply, once its expired messages are counted as dropped."""
    metrics.count(metrics.DROPPED_EXPIRED, int(reply[9]))
    return reply


def epoch_of(value: str | bytes) -> Epoch:
    if isinstance(value, bytes):
        value = value.decode()
    epoch_id, started_ms = value.split(" ")
    return Epoch(epoch_id, int(started_ms))


@dataclass(slots=True)
class QueueSnapshot:
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
class BroadcastSnapshot(QueueSnapshot):
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


def page_of(user_id: str, request: PageRequest, reply: list[Any]) -> ReadResult:
    """The page a read script's reply holds, for reader `user_id`."""
    epoch_value, clock, user_state, broadcast_state, marks = reply[:5]
    user_from, broadcast_from, users, broadcasts, _expired = reply[5:]
    epoch = epoch_of(epoch_value)
    user_queue = QueueSnapshot(
        last_seq=int(user_state[0] or 0),
        last_timestamp=int(user_state[1] or 0),
        dropped=mark(user_state[2], user_state[3]),
        since_seq=int(user_from),
        entries=[entry_of(raw, USER, user_id) for raw in users],
    )
    broadcast_queue = broadcast_snapshot(
        broadcast_state, marks, request, int(broadcast_from), broadcasts
    )
    return read_page(epoch, user_queue, broadcast_queue, request, int(clock))


def broadcast_snapshot(
    state: list[Any],
    marks: list[Any],
    request: PageRequest,
    since_seq: int,
    entries: list[bytes],
) -> BroadcastSnapshot:
    """The broadcast queue as the read script saw it."""
    topics = sorted(request.topics)  # the order the script was given
    by_topic = {
        topic: mark(*topic_mark.split(b" "))
        for topic, topic_mark in zip(topics, marks, strict=True)
        if topic_mark
    }
    return BroadcastSnapshot(
        last_seq=int(state[0] or 0),
        last_timestamp=int(state[1] or 0),
        dropped=mark(state[2], state[3]),
        since_seq=since_seq,
        entries=[entry_of(raw, BROADCAST) for raw in entries],
        untargeted=mark(state[4], state[5]),
        untracked=mark(state[6], state[7]),
        by_topic=by_topic,
    )
