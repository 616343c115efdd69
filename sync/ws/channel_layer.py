"""The channel layer with REDIS_URL: channels-redis's pub/sub layer, minus a leak.

``RedisPubSubChannelLayer.new_channel`` (channels-redis 4.3) registers the
channel's in-process queue before it subscribes in Redis; when Redis is out
of reach the subscribe fails and the queue stays behind forever (about
3 KiB per refused socket: every reconnect attempt during an outage).
"""

from __future__ import annotations

import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """channels-redis's pub/sub layer; a channel that fails to open leaves nothing."""

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel for one consumer of this process (see the module doc)."""
        layer = self._get_layer()
        channel = f"{layer.prefix}{prefix}{uuid.uuid4().hex}"
        try:
            await layer._subscribe_to_channel(channel)
        except BaseException:
            layer.channels.pop(channel, None)
            raise
        return channel
