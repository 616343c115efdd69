"""A message's envelope as the store keeps it: JSON text, encoded once.

The store keeps text, not parsed objects: a payload of any shape then costs
about its encoded size in memory (a dict-heavy payload as Python objects
costs twenty times that), and every reader's copy is spliced from the same
bytes instead of being encoded again. The envelope of the contract,

    {"id", "type", "payload", "timestamp", "userId", "topics", "cursor",
     "correlationId"}

is encoded up to the timestamp (``head``), between timestamp and cursor
(``middle``) and after the cursor (``tail``): the store splices in the
timestamp it stamps, and each reader's cursor is spliced in on the way out.
Compact JSON never holds a raw newline (strings escape it), which is what
lets the Redis store keep the three parts in one entry, a line each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sync.core import jsontext


@dataclass(frozen=True, slots=True)
class EnvelopeParts:
    """The envelope's text around its two stamps: timestamp, then cursor."""

    head: bytes
    middle: bytes
    tail: bytes

    def with_timestamp(self, timestamp: int) -> tuple[bytes, bytes]:
        """The text before the cursor value, and after it."""
        return self.head + str(timestamp).encode() + self.middle, self.tail


@dataclass(slots=True)
class Draft:
    """A message on its way into the store, its payload already encoded."""

    id: str
    type: str
    payload_json: bytes
    user_id: str | None
    topics: tuple[str, ...]
    correlation_id: str | None

    @classmethod
    def of(cls, message: dict[str, Any], payload_json: bytes | None = None) -> Draft:
        """A draft of an envelope dict; its payload is encoded unless given.

        A dict handed straight to ``add_message`` was not validated: its
        payload is encoded here, refusing what JSON cannot hold.
        """
        user_id = message.get("userId")
        if payload_json is None:
            payload_json = jsontext.encode_value(message.get("payload") or {})
        return cls(
            id=str(message["id"]),
            type=str(message["type"]),
            payload_json=payload_json,
            user_id=None if user_id is None else str(user_id),
            topics=tuple(message.get("topics") or ()),
            correlation_id=message.get("correlationId"),
        )

    def parts(self) -> EnvelopeParts:
        """The envelope's text, with the places of the timestamp and cursor."""
        dumps = jsontext.dumps
        return EnvelopeParts(
            head=b'{"id":%s,"type":%s,"payload":%s,"timestamp":'
            % (dumps(self.id), dumps(self.type), self.payload_json),
            middle=b',"userId":%s,"topics":%s,"cursor":'
            % (dumps(self.user_id), dumps(list(self.topics))),
            tail=b',"correlationId":%s}' % dumps(self.correlation_id),
        )


def join_frames(frames: Iterable[bytes]) -> bytes:
    """Encoded messages as one JSON array, without decoding any of them."""
    return b"[" + b",".join(frames) + b"]"
