"""Figures for operators: the admin monitor page and ``sync_stats``.

One snapshot serves both, so the page and the command never disagree. The
status figures and the queues come from the store, so with Redis they cover
the whole cluster; ``thisProcess`` covers only the process answering (a
management command's process holds no sockets).
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.exceptions import ValidationError

from sync.core.clock import now_ms
from sync.core.conf import sync_settings
from sync.services.realtime import RealtimeSync
from sync.store.base import StoreStats
from sync.store.paging import BROADCAST

POLL_ENDPOINT = "/api/sync/poll"
# Queues listed one by one, largest first; the totals count every queue.
LARGEST_QUEUES = 50


def status_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """The ``status`` object of GET /api/sync/status, from get_stats()."""
    return {
        "websocket": {
            "enabled": sync_settings.WEBSOCKET_ENABLED,
            "connections": stats["websocket"]["activeConnections"],
            "totalConnections": stats["websocket"]["totalConnections"],
            "subscriptions": stats["websocket"]["subscriptions"],
        },
        "polling": {
            "enabled": True,
            "endpoint": POLL_ENDPOINT,
            "queues": stats["messageQueue"]["totalQueues"],
            "messages": stats["messageQueue"]["totalMessages"],
        },
        "lastCheck": now_ms(),
    }


def largest_queues(store_stats: StoreStats, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` queues by size, largest first (ties by name), with the
    username of each user queue (None: broadcasts, or a deleted user)."""
    ranked = sorted(store_stats.queue_sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    names = usernames([name for name, _ in ranked[:limit] if name != BROADCAST])
    return [
        {"queue": name, "messages": size, "username": names.get(name)}
        for name, size in ranked[:limit]
    ]


def usernames(user_ids: list[str]) -> dict[str, str]:
    """Usernames of the users among `user_ids` that exist, by id."""
    # Imported here so the service layer can load before the app registry.
    from django.contrib.auth import get_user_model

    model = get_user_model()
    keys = []
    for user_id in user_ids:
        with contextlib.suppress(ValidationError):  # not an id of this model
            keys.append(model._meta.pk.to_python(user_id))
    found = model.objects.filter(pk__in=keys).values_list("pk", model.USERNAME_FIELD)
    return {str(pk): username for pk, username in found}


def snapshot(sync: RealtimeSync, *, largest: int = LARGEST_QUEUES) -> dict[str, Any]:
    """Status, store, queues, this process and the live instances, as JSON."""
    store_stats = sync.store.stats()
    local = sync.connections.stats()
    return {
        "status": status_figures(sync.get_stats()),
        "store": {
            "backend": "redis" if sync.store.shared else "memory",
            "messageTtl": sync_settings.MESSAGE_TTL,
            "queueMaxMessages": sync_settings.QUEUE_MAX_MESSAGES,
            # Charged against STORE_MAX_BYTES, by either backend.
            "bytes": store_stats.total_bytes,
        },
        "queues": {
            "largest": largest_queues(store_stats, largest),
            # Redis lists sizes for small stores only (see redis_store).
            "sizesListed": len(store_stats.queue_sizes) == store_stats.total_queues,
        },
        "thisProcess": {
            "instanceId": sync.instance_id,
            "connections": local.active,
            "subscriptions": local.subscriptions,
            "totalConnections": local.total,
            "waitingPolls": sync.waiting_polls.total(),
        },
        "instances": [
            {
                "instanceId": figures.instance_id,
                "connections": figures.active,
                "subscriptions": figures.subscriptions,
                "reportedAt": figures.reported_at,
                "thisProcess": figures.instance_id == sync.instance_id,
            }
            for figures in sync.store.presence.live_instances()
        ],
    }
