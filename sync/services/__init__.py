"""The service layer: the only code that publishes or touches the store.

    from sync.services import get_realtime_sync, get_message_queue

Both are process-wide and created on first use (never at import), from the
``SYNC`` settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.core.protocol import CloseCode
from sync.services import lifecycle
from sync.services.connections import MemoryConnectionRegistry
from sync.services.handlers import message_handler
from sync.services.hub import DeliveryHub
from sync.services.realtime import RealtimeSync
from sync.services.revocation import HeardRevocations
from sync.store.base import MessageStore
from sync.store.memory import MemoryMessageStore

__all__ = [
    "RealtimeSync",
    "get_message_queue",
    "get_realtime_sync",
    "message_handler",
    "reset_services",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_realtime_sync: RealtimeSync | None = None
# What the wings above keep per process, started afresh with the service.
_reset_hooks: list[Callable[[], None]] = []


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
    """Start over with a fresh service, on `store` if given (tests, reloads).

    Everything the process held goes with the old one: its hub and sockets'
    registry, handler runs, waiting polls, token cache and rate counters, and
    what the wings above registered with ``on_reset``.
    """
    global _realtime_sync
    with _lock:
        _realtime_sync = _build(store or create_store())
    for hook in list(_reset_hooks):
        hook()
    return _realtime_sync


def on_reset(hook: Callable[[], None]) -> None:
    """Have `hook` forget its per-process state whenever the service is reset."""
    if hook not in _reset_hooks:
        _reset_hooks.append(hook)


def create_store() -> MessageStore:
    """Redis when ``REDIS_URL`` is set (one store for all instances), else memory."""
    if not sync_settings.REDIS_URL:
        return MemoryMessageStore()
    # Imported here so the embedded default never loads the Redis client.
    from sync.store.redis import RedisMessageStore

    prefix = getattr(settings, "SYNC_STORE_KEY_PREFIX", "sync:store:")
    return RedisMessageStore(sync_settings.REDIS_URL, prefix=prefix)


def _close_sockets_for_shutdown() -> None:
    # 1001 tells clients to reconnect elsewhere and resume by cursor; the
    # other instances stop counting our sockets at once.
    if _realtime_sync is not None:
        _realtime_sync.hub.close_all(CloseCode.GOING_AWAY)
        _realtime_sync.forget_connections()


def _build(store: MessageStore) -> RealtimeSync:
    lifecycle.on_shutdown(_close_sockets_for_shutdown)
    lifecycle.on_shutdown(metrics.mark_this_process_dead)
    hub = DeliveryHub()
    store.bus.deliver_remote_to(hub)  # other instances' messages (Redis store)
    store.bus.hear_revocations(HeardRevocations(hub))  # every process's (Redis store)
    return RealtimeSync(store, hub, MemoryConnectionRegistry())
