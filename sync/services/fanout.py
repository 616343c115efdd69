"""Hands stored messages to live WebSocket connections over the channel layer.

The channel layer is treated as lossy (the in-memory layer and channels-redis
both drop messages past their capacity): every event carries the message's
queue sequence so a consumer that sees a jump fetches what it missed from the
store. A failed send therefore delays delivery but never loses a message.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from sync.services.message_queue import BROADCAST, StoredMessage

logger = logging.getLogger(__name__)

BROADCAST_GROUP = "sync.broadcast"
SAFE_GROUP_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MESSAGE_EVENT = "sync.message"


def user_group(user_id: Any) -> str:
    """Group of every connection of one user (all tabs)."""
    key = str(user_id)
    if not SAFE_GROUP_PART.fullmatch(key):
        # Group names allow a narrow alphabet; hash anything else (UUIDs with
        # braces, e-mail-like keys) into it.
        key = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"sync.user.{key}"


def topic_group(topic: str) -> str:
    """Group of connections subscribed to `topic` (topics are validated names)."""
    return f"sync.topic.{topic}"


def groups_for(entry: StoredMessage) -> list[str]:
    """Where a stored message goes: its user, its topics, or everyone."""
    if entry.queue != BROADCAST:
        return [user_group(entry.envelope["userId"])]
    topics = entry.envelope["topics"]
    return [topic_group(topic) for topic in topics] if topics else [BROADCAST_GROUP]


def event_for(entry: StoredMessage) -> dict[str, Any]:
    """The channel-layer event a consumer receives for `entry`."""
    return {
        "type": MESSAGE_EVENT,
        "message": entry.envelope,
        "queue": entry.queue,
        "seq": entry.seq,
        "order": entry.order,
        "published_at": time.time(),
    }


class ChannelLayerFanout:
    """Sends each stored message to the groups of its receivers."""

    async def asend(self, entry: StoredMessage) -> None:
        """Group-send `entry`; log and carry on if the layer fails."""
        layer = get_channel_layer()
        if layer is None:
            return
        event = event_for(entry)
        for group in groups_for(entry):
            # Each group on its own: one failure must not starve the others.
            try:
                await layer.group_send(group, event)
            except Exception:
                # The message is already in the store: receivers catch up.
                logger.warning(
                    "fan-out failed; receivers will catch up from the store",
                    extra={"message_id": entry.envelope["id"], "queue": entry.queue},
                    exc_info=True,
                )

    def send(self, entry: StoredMessage) -> None:
        """Sync twin of asend, for views, signals and commands."""
        async_to_sync(self.asend)(entry)
