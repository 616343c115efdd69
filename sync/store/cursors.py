"""Cursors: a reader's position in its two queues, tied to the store's epoch.

A reader (one user's connection or poll) sees two queues: its own and the
broadcast queue. Each queue numbers its messages 1, 2, 3… so a position is the
pair of the last sequence numbers processed: delivered, or passed over as a
broadcast for topics the reader does not follow. Resuming returns exactly the
messages after both, and a jump in either number tells a receiver to ask the
store whether it missed something. The epoch changes whenever the store loses
its history (an in-memory store after a restart), so positions from before
are recognised and never trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sync.core.exceptions import InvalidCursor

CURSOR_PATTERN = re.compile(r"^([a-z0-9]{1,32})-(\d{1,18})-(\d{1,18})$")


@dataclass(frozen=True, slots=True)
class Position:
    """Last user-queue and broadcast-queue sequence numbers processed.

    A position only says where a reader is: it never changes a stamp.
    """

    epoch: str
    user_seq: int
    broadcast_seq: int

    def encode(self) -> str:
        """The opaque cursor string handed to clients."""
        return f"{self.epoch}-{self.user_seq}-{self.broadcast_seq}"

    def after_user(self, seq: int) -> Position:
        """This position once user-queue message `seq` is processed."""
        return Position(self.epoch, seq, self.broadcast_seq)

    def after_broadcast(self, seq: int) -> Position:
        """This position once broadcast message `seq` is processed."""
        return Position(self.epoch, self.user_seq, seq)


def decode_cursor(text: str) -> Position:
    """Parse a cursor string, raising InvalidCursor when it is not one of ours."""
    match = CURSOR_PATTERN.fullmatch(text or "")
    if not match:
        raise InvalidCursor(details={"field": "cursor"})
    return Position(match[1], int(match[2]), int(match[3]))
