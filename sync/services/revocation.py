"""Revoking access: cached tokens and open sockets, in every process.

A revocation (a deleted token, a deactivated or deleted user) is applied in
the process that made it, at once: its token cache forgets the token (or
every token of the user) and its hub closes the sockets opened with it with
4401. It is then published for the other processes: with Redis, on the
store's revocation channel, which every process subscribes to with the one
subscription it already holds for the store (`HeardRevocations` applies what
it hears), whether or not it holds a socket of that user and whether or not
it ever opened one. A revocation names a user and a token key: None closes
every socket of the user, a key those opened with that token. Without Redis
there is one process, and applying it here is all there is to do.

Changes nothing publishes (a shell on another host without Redis,
``QuerySet.update``) are caught by the heartbeat, which asks
``afind_revoked`` for all the sockets it pings at once, and by the token
cache's lifetime of one heartbeat interval.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, transaction

from sync.services.hub import DeliveryHub
from sync.services.token_cache import token_cache

logger = logging.getLogger(__name__)


def revoke_here(hub: DeliveryHub, user_id: Any, token_key: str | None) -> None:
    """Apply a revocation to this process: its cached tokens, then its sockets."""
    if token_key is None:
        token_cache().forget_user(user_id)
    else:
        token_cache().forget_key(token_key)
    hub.revoke(str(user_id), token_key)


class HeardRevocations:
    """Applies here what any process publishes (see RedisMessageStore)."""

    def __init__(self, hub: DeliveryHub) -> None:
        self._hub = hub

    def revoked(self, user_id: str, token_key: str | None) -> None:
        """A revocation made anywhere, this process included (applied twice)."""
        revoke_here(self._hub, user_id, token_key)

    def revocations_missed(self) -> None:
        """Not listening for a while: any cached token may be revoked."""
        token_cache().clear()


def ensure_revocations_heard() -> None:
    """Subscribe this process to every process's revocations (with Redis).

    Building the service does it; the token cache calls this before caching,
    in case this process has served no sync request yet.
    """
    from sync.services import get_realtime_sync

    get_realtime_sync()


@contextlib.contextmanager
def _failure_logged(user_id: Any, route: str) -> Iterator[None]:
    """A revocation that cannot be published is logged, never raised.

    Deleting a user in the admin must not fail because Redis is away: cached
    tokens expire and the heartbeat's re-check closes sockets within one
    interval.
    """
    try:
        yield
    except Exception:
        logger.warning(
            "revocation not sent through the %s; cached tokens expire and the "
            "heartbeat re-check closes sockets within one interval",
            route,
            extra={"user_id": str(user_id)},
            exc_info=True,
        )


async def _asend(user_id: Any, token_key: str | None) -> None:
    """Apply here, then tell the other processes (failures logged)."""
    from sync.services import get_realtime_sync

    sync = get_realtime_sync()
    revoke_here(sync.hub, user_id, token_key)
    with _failure_logged(user_id, "store"):
        await sync.store.bus.apublish_revocation(str(user_id), token_key)


def _send(user_id: Any, token_key: str | None) -> None:
    """Sync twin of _asend; the store is told with its sync client, so a
    process with no event loop (``manage.py shell``) opens no loop's pool."""
    from sync.services import get_realtime_sync

    sync = get_realtime_sync()
    revoke_here(sync.hub, user_id, token_key)
    with _failure_logged(user_id, "store"):
        sync.store.bus.publish_revocation(str(user_id), token_key)


async def arevoke_user(user_id: Any) -> None:
    """Refuse every token and close every open socket of the user."""
    await _asend(user_id, None)


async def arevoke_token(user_id: Any, token_key: str) -> None:
    """Refuse `token_key`, and close the user's sockets it opened."""
    await _asend(user_id, token_key)


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
    # DRF's token model, through the app registry: the service layer knows
    # the table, not the framework that serves it.
    tokens = apps.get_model("authtoken", "Token")._default_manager
    users = get_user_model()._default_manager
    user_ids = {user_id for user_id, _ in credentials}
    active = set(
        users.filter(pk__in=user_ids, is_active=True).values_list("pk", flat=True)
    )
    keys = {key for _, key in credentials if key is not None}
    owners = dict(tokens.filter(key__in=keys).values_list("key", "user_id"))
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
