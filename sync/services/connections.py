"""Counts of live WebSocket connections, for status pages and metrics.

`active` counts open sockets (not users), `total` counts sockets opened since
the process started, `subscriptions` counts topic subscriptions over open
sockets. The in-memory registry covers one process; the Redis one, the cluster.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of the connection counters."""

    active: int
    total: int
    subscriptions: int


class MemoryConnectionRegistry:
    """Process-local counters, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[str, int] = {}  # connection id -> topic count
        self._total = 0

    def opened(self, connection_id: str) -> None:
        """Count a newly accepted socket."""
        with self._lock:
            self._subscriptions[connection_id] = 0
            self._total += 1

    def subscribed(self, connection_id: str, topic_count: int) -> None:
        """Record how many topics a socket is subscribed to now."""
        with self._lock:
            if connection_id in self._subscriptions:
                self._subscriptions[connection_id] = topic_count

    def closed(self, connection_id: str) -> None:
        """Forget a socket; safe to call twice (abrupt disconnects)."""
        with self._lock:
            self._subscriptions.pop(connection_id, None)

    def stats(self) -> ConnectionStats:
        """The current counters."""
        with self._lock:
            return ConnectionStats(
                active=len(self._subscriptions),
                total=self._total,
                subscriptions=sum(self._subscriptions.values()),
            )
