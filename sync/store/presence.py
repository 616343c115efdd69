"""The server instances sharing a store, and their sockets (status figures).

Each instance reports its open sockets every few seconds; the status and
the admin monitor add up the others' last reports. A process-local store
has no other instance: ``LocalPresence`` reports nothing and counts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterConnections:
    """Socket figures of the other instances, as they last reported them."""

    active: int = 0
    subscriptions: int = 0
    opened: int = 0  # reported opened by every instance, since the cluster began


@dataclass(frozen=True, slots=True)
class InstanceFigures:
    """One live server instance sharing the store, as it last reported."""

    instance_id: str
    active: int
    subscriptions: int
    reported_at: int  # ms


class Presence:
    """The instances' figures; the local one: no other instance."""

    async def areport_connections(
        self, instance_id: str, active: int, subscriptions: int, opened: int
    ) -> None:
        """Publish this instance's socket figures for the others.

        `opened` is how many sockets opened since the last report.
        """
        return None

    def connections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """Open sockets and subscriptions of the other live instances, and
        sockets reported opened cluster-wide."""
        return ClusterConnections()

    async def aconnections_elsewhere(self, instance_id: str) -> ClusterConnections:
        """Async twin of connections_elsewhere."""
        return self.connections_elsewhere(instance_id)

    def forget_connections(self, instance_id: str) -> None:
        """This instance is going away: drop its figures at once."""
        return None

    def live_instances(self) -> list[InstanceFigures]:
        """Every instance that reported lately."""
        return []


LocalPresence = Presence
