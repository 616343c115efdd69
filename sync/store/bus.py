"""Between the instances sharing a store: their messages and revocations.

Another instance's message reaches this process's hub as it is stored, for
live WebSocket delivery; a revocation made anywhere (a deleted token, a
deactivated user) reaches every process, so each drops its cached token and
closes its sockets at once. A process-local store has no other instance:
``LocalBus`` carries nothing.
"""

from __future__ import annotations

from typing import Protocol

from sync.store.paging import StoredMessage


class RemoteDelivery(Protocol):
    """What the bus hands other instances' messages to (the delivery hub)."""

    def dispatch_threadsafe(self, entry: StoredMessage) -> None: ...

    def catch_up_all(self) -> None: ...


class RevocationListener(Protocol):
    """What the bus hands every process's revocations to (the service)."""

    def revoked(self, user_id: str, token_key: str | None) -> None: ...

    def revocations_missed(self) -> None: ...


class Bus:
    """The instances' bus; the local one: no other instance to hear from."""

    def deliver_remote_to(self, delivery: RemoteDelivery) -> None:
        """Hand messages other instances store to `delivery` (the hub)."""
        return None

    def hear_revocations(self, listener: RevocationListener) -> None:
        """Hand every process's revocations to `listener`."""
        return None

    def publish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Tell every process access was revoked."""
        return None

    async def apublish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Async twin of publish_revocation."""
        return None


LocalBus = Bus
