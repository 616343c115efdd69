"""The service layer: the only code that publishes or touches the store.

    from sync.services import get_realtime_sync, get_message_queue

Both are process-wide and created on first use (never at import), from the
``SYNC`` settings.
"""

from __future__ import annotations

import threading

from sync.services.connections import MemoryConnectionRegistry
from sync.services.fanout import ChannelLayerFanout
from sync.services.handlers import message_handler
from sync.services.message_queue import MemoryMessageStore, MessageStore
from sync.services.realtime import RealtimeSync

__all__ = [
    "RealtimeSync",
    "get_message_queue",
    "get_realtime_sync",
    "message_handler",
    "reset_services",
]

_lock = threading.Lock()
_realtime_sync: RealtimeSync | None = None


def get_realtime_sync() -> RealtimeSync:
    """The process-wide RealtimeSync, built on first use."""
    global _realtime_sync
    if _realtime_sync is None:
        with _lock:
            if _realtime_sync is None:
                _realtime_sync = _build(create_store())
    return _realtime_sync


def get_message_queue() -> MessageStore:
    """The process-wide message store."""
    return get_realtime_sync().store


def reset_services(store: MessageStore | None = None) -> RealtimeSync:
    """Start over with a fresh service, on `store` if given (tests, reloads)."""
    global _realtime_sync
    with _lock:
        _realtime_sync = _build(store or create_store())
    return _realtime_sync


def create_store() -> MessageStore:
    """The store backend the settings ask for."""
    return MemoryMessageStore()


def _build(store: MessageStore) -> RealtimeSync:
    return RealtimeSync(store, ChannelLayerFanout(), MemoryConnectionRegistry())
