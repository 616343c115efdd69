"""Closing the sockets of users and tokens that lost the right to connect.

A revocation travels on the user's group, which every socket of that user
already listens on, as ``{"type": "sync.revoke", "token": <key or None>}``:
None closes every socket of the user, a key closes those opened with that
token. The event reaches sockets at once wherever the channel layer does (this
process, or every process with Redis). Changes it cannot reach (a shell on
another host without Redis, ``QuerySet.update``) are caught by the heartbeat,
which asks ``afind_revoked`` for all the sockets it pings at once.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, transaction

from sync.services.groups import cross_process_layer, user_group

logger = logging.getLogger(__name__)

REVOKE_EVENT = "sync.revoke"


def revoke_event(token_key: str | None) -> dict[str, Any]:
    """The channel-layer event; `token` None means every socket of the user."""
    return {"type": REVOKE_EVENT, "token": token_key}


async def _asend(user_id: Any, token_key: str | None) -> None:
    """Close this process's sockets through the hub, and tell other processes
    through the shared channel layer; a failing layer is logged, never raised.

    Deleting a user in the admin must not fail because Redis is away: the
    heartbeat's re-check still closes the socket within one interval.
    """
    from sync.services import get_realtime_sync

    get_realtime_sync().hub.revoke(str(user_id), token_key)
    try:
        layer = cross_process_layer()
        if layer is not None:
            await layer.group_send(user_group(user_id), revoke_event(token_key))
    except Exception:
        logger.warning(
            "revocation not sent; the heartbeat re-check will close the sockets",
            extra={"user_id": str(user_id)},
            exc_info=True,
        )


async def arevoke_user(user_id: Any) -> None:
    """Close every open socket of the user (deactivated or deleted)."""
    await _asend(user_id, None)


async def arevoke_token(user_id: Any, token_key: str) -> None:
    """Close the user's sockets that were opened with `token_key`."""
    await _asend(user_id, token_key)


def _send(user_id: Any, token_key: str | None) -> None:
    """Sync bridge to _asend (which logs failures instead of raising)."""
    async_to_sync(_asend)(user_id, token_key)


def revoke_user(user_id: Any, using: str = DEFAULT_DB_ALIAS) -> None:
    """Sync twin of arevoke_user, sent once the transaction commits.

    A rolled-back deactivation then revokes nothing; outside a transaction
    Django runs the hook at once. For sync code (signals, views, commands);
    async code awaits arevoke_user.
    """
    transaction.on_commit(partial(_send, user_id, None), using=using)


def revoke_token(user_id: Any, token_key: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Sync twin of arevoke_token, sent once the transaction commits."""
    transaction.on_commit(partial(_send, user_id, token_key), using=using)


def find_revoked(
    credentials: list[tuple[Any, str | None]],
) -> set[tuple[Any, str | None]]:
    """Which (user id, token key) pairs lost their right to a socket.

    Two queries for any number of sockets, so a heartbeat over thousands of
    them costs the database almost nothing.
    """
    from rest_framework.authtoken.models import Token

    users = get_user_model()._default_manager
    user_ids = {user_id for user_id, _ in credentials}
    active = set(
        users.filter(pk__in=user_ids, is_active=True).values_list("pk", flat=True)
    )
    keys = {key for _, key in credentials if key is not None}
    owners = dict(Token.objects.filter(key__in=keys).values_list("key", "user_id"))
    return {
        (user_id, key)
        for user_id, key in credentials
        if user_id not in active or (key is not None and owners.get(key) != user_id)
    }


async def afind_revoked(
    credentials: list[tuple[Any, str | None]],
) -> set[tuple[Any, str | None]]:
    """Async twin of find_revoked, for the heartbeat."""
    return await database_sync_to_async(find_revoked)(credentials)
