"""Live WebSocket connections, for limits, status pages and metrics.

`active` counts open sockets (not users), `total` counts sockets opened since
the process started, `subscriptions` counts topic subscriptions over open
sockets. Per-user counts enforce ``SYNC_WS_MAX_CONNECTIONS_PER_USER`` on open
sockets, so a user who reconnects often is never locked out while one who
piles up sockets is. The in-memory registry covers one process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sync.core import metrics


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
        self._owners: dict[str, str] = {}  # connection id -> user id
        self._per_user: dict[str, int] = {}  # user id -> open sockets
        self._total = 0

    def try_open(self, connection_id: str, user_id: str, limit: int) -> bool:
        """Count a newly accepted socket unless its user already holds `limit`."""
        with self._lock:
            if self._per_user.get(user_id, 0) >= limit:
                return False
            self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
            self._owners[connection_id] = user_id
            self._subscriptions[connection_id] = 0
            self._total += 1
        metrics.connections.inc()
        return True

    def subscribed(self, connection_id: str, topic_count: int) -> None:
        """Record how many topics a socket is subscribed to now."""
        with self._lock:
            if connection_id in self._subscriptions:
                self._subscriptions[connection_id] = topic_count

    def closed(self, connection_id: str) -> None:
        """Forget a socket; safe to call twice (abrupt disconnects)."""
        with self._lock:
            self._subscriptions.pop(connection_id, None)
            user_id = self._owners.pop(connection_id, None)
            if user_id is None:
                return
            remaining = self._per_user[user_id] - 1
            if remaining:
                self._per_user[user_id] = remaining
            else:
                del self._per_user[user_id]
        metrics.connections.dec()

    def open_for_user(self, user_id: str) -> int:
        """How many sockets `user_id` holds open now."""
        with self._lock:
            return self._per_user.get(user_id, 0)

    def stats(self) -> ConnectionStats:
        """The current counters."""
        with self._lock:
            return ConnectionStats(
                active=len(self._subscriptions),
                total=self._total,
                subscriptions=sum(self._subscriptions.values()),
            )
