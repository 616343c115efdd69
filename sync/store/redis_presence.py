"""The server instances on one Redis, and their sockets (status figures).

Each instance writes its figures under its own key, which expires if it
stops reporting, and its name in a sorted set by the time of its last
report; sockets opened are added to one cluster-wide counter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import redis

from sync.store.failures import unavailable_when_down
from sync.store.presence import ClusterConnections, InstanceFigures, Presence
from sync.store.redis_connection import RedisConnection

# An instance that has not reported its sockets for this long is taken for
# dead and left out of the cluster's figures (instances report every 2 s).
INSTANCE_SILENCE_SECONDS = 15


def cluster_of(figures: list[str | None], opened: str | None) -> ClusterConnections:
    """Sum the other instances' "active subscriptions" figures."""
    pairs = [tuple(map(int, value.split(" "))) for value in figures if value]
    return ClusterConnections(
        active=sum(active for active, _ in pairs),
        subscriptions=sum(subscriptions for _, subscriptions in pairs),
        opened=int(opened or 0),
    )


class RedisPresence(Presence):
    """The instances sharing a store on one Redis, as they last reported."""

    def __init__(
        self, connection: RedisConnection, clock: Callable[[], float] = time.time
    ) -> None:
        self.connection = connection
        self.clock = clock
        prefix = connection.prefix
        self.live_key = f"{prefix}instances"  # sorted set: instance -> last ms
        self.opened_key = f"{prefix}opened"  # sockets opened, cluster-wide

    def figures_key(self, instance_id: str) -> str:
        """Where `instance_id` keeps its "active subscriptions" figures."""
        return f"{self.connection.prefix}instance:{instance_id}"

    async def areport_connections(
        self, instance_id: str, active: int, subscriptions: int, opened: int
    ) -> None:
        """Publish this instance's figures; they expire if it stops reporting."""
        silence_ms = INSTANCE_SILENCE_SECONDS * 1000
        client = self.connection.async_client()
        async with client.pipeline(transaction=False) as pipe:
            figures = f"{active} {subscriptions}"
            pipe.set(self.figures_key(instance_id), figures, px=silence_ms)
            pipe.zadd(self.live_key, {instance_id: int(self.clock() * 1000)})
            if opened:
                pipe.incrby(self.opened_key, opened)
            with unavailable_when_down():
                await pipe.execute()

    def connections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """The other live instances' last figures, and the cluster's opened."""
        client = self.connection.client
        with unavailable_when_down():
            client.zremrangebyscore(self.live_key, 0, self._silence_cutoff_ms())
            others = self._others(client.zrange(self.live_key, 0, -1), instance_id)
            figures = client.mget(others) if others else []
            opened = client.get(self.opened_key)
        return cluster_of(figures, opened)

    async def aconnections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """Async twin of connections_elsewhere."""
        client = self.connection.async_client()
        with unavailable_when_down():
            await client.zremrangebyscore(self.live_key, 0, self._silence_cutoff_ms())
            live = await client.zrange(self.live_key, 0, -1)
            others = self._others(live, instance_id)
            figures = await client.mget(others) if others else []
            opened = await client.get(self.opened_key)
        return cluster_of(figures, opened)

    def forget_connections(self, instance_id: str) -> None:
        """Drop this instance's figures at once (it is shutting down)."""
        client = self.connection.client
        with contextlib.suppress(redis.RedisError):
            client.zrem(self.live_key, instance_id)
            client.delete(self.figures_key(instance_id))

    def live_instances(self) -> list[InstanceFigures]:
        """Every instance that reported within INSTANCE_SILENCE_SECONDS."""
        client = self.connection.client
        with unavailable_when_down():
            client.zremrangebyscore(self.live_key, 0, self._silence_cutoff_ms())
            reported = client.zrange(self.live_key, 0, -1, withscores=True)
            keys = [self.figures_key(name) for name, _ in reported]
            figures = client.mget(keys) if keys else []
        return [
            InstanceFigures(name, *map(int, value.split(" ")), int(reported_at))
            for (name, reported_at), value in zip(reported, figures, strict=True)
            if value  # its figures expired: it stopped reporting
        ]

    def _silence_cutoff_ms(self) -> int:
        return int(self.clock() * 1000) - INSTANCE_SILENCE_SECONDS * 1000

    def _others(self, instances: list[str], instance_id: str) -> list[str]:
        return [self.figures_key(other) for other in instances if other != instance_id]
