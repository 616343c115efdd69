"""A socket's topics: its subscribe and unsubscribe frames.

A new topic starts from now: what the current topics still owe is
delivered first, so the new ones bring none of their older broadcasts.
"""

from __future__ import annotations

from typing import Any

from sync.core import frames
from sync.core.conf import MAX_TOPICS
from sync.core.exceptions import InvalidTopics
from sync.core.protocol import FrameType
from sync.core.topic_access import aauthorize_topics
from sync.core.validation import validate_subscription
from sync.services.live_reader import LiveReader
from sync.ws.socket_output import SocketOutput


class Subscriptions:
    """Changes one socket's topics, each answered with every topic now."""

    def __init__(
        self,
        user: Any,
        sync: Any,
        connection_id: str,
        reader: LiveReader,
        output: SocketOutput,
    ) -> None:
        self.user = user
        self.sync = sync
        self.connection_id = connection_id
        self.reader = reader
        self.output = output

    async def change(self, kind: str, frame: dict[str, Any], correlation) -> None:
        """Apply a subscribe or unsubscribe frame, then answer it."""
        topics = validate_subscription(frame)
        if kind == FrameType.SUBSCRIBE:
            await self._subscribe(topics)
            answer = FrameType.SUBSCRIBED
        else:
            self.reader.stream.unsubscribe(topics)
            answer = FrameType.UNSUBSCRIBED
        if self.output.ended:  # the store had lost messages: 4409 is on its way
            return
        now = sorted(self.reader.stream.topics)
        self.sync.connections.subscribed(self.connection_id, len(now))
        await self.output.send_frame(frames.topics_changed(answer, now, correlation))

    async def _subscribe(self, topics: tuple[str, ...]) -> None:
        new = [topic for topic in topics if topic not in self.reader.stream.topics]
        if len(self.reader.stream.topics) + len(new) > MAX_TOPICS:
            raise InvalidTopics(
                f"At most {MAX_TOPICS} topics per connection.",
                details={"max": MAX_TOPICS},
            )
        await aauthorize_topics(self.user, new)
        # Nothing runs between the catch-up and the subscribe: no await
        # separates them.
        await self.reader.catch_up()
        if not self.output.ended:
            self.reader.stream.subscribe(new)
