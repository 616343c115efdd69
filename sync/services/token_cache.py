"""A short-lived in-process cache of API tokens: key -> (user, token).

Without it every ``Authorization: Token`` request reads the token and its
user from the database, a thread hop per request on the async path. An entry
is dropped at once (and again when the transaction commits) when its token
is deleted or its user is saved or deleted in this process, and when another
process revokes the token or the user (``sync.services.revocation``: with
Redis every process hears every revocation), so a revoked token or a
deactivated user is refused on the next request. An entry lives one
heartbeat interval at most: changes nothing announces (``QuerySet.update``,
raw SQL, another host without Redis) take effect over HTTP within the time
the heartbeat's re-check takes to close the user's sockets.

The receivers are connected when this module is first imported: the token
authentication imports it, so they are in place before anything is cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from sync.core.conf import sync_settings

Entry = tuple[Any, Any]  # (user, token)


class TokenCache:
    """Token key -> (user, token) for active users, shared by all threads.

    Bound: ``MAX_ENTRIES`` keys. When full, the oldest entry (the one closest
    to expiry: every entry lives the same TTL) is evicted; that token is read
    from the database again on its next request. A cached user object is
    shared by concurrent requests: read it, never change it.
    """

    MAX_ENTRIES = 10_000
    timer: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Any, Any]] = {}  # key -> expiry, ...
        self._keys_by_user: dict[str, set[str]] = {}  # str(user pk) -> keys
        # Bumped by every invalidation: a lookup that began before one must
        # not store what it read (it may be the revoked token).
        self._generation = 0

    @property
    def ttl(self) -> float:
        """Seconds an entry is trusted without asking the database again.

        One heartbeat interval: a change no revocation announces is then
        refused over HTTP as soon as the heartbeat's re-check closes sockets.
        """
        return float(sync_settings.HEARTBEAT_INTERVAL)

    def generation(self) -> int:
        """Take before reading the database; hand to `put` afterwards."""
        return self._generation

    def get(self, key: str) -> Entry | None:
        """The cached (user, token) for `key`, or None (absent or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.timer():
            with self._lock:
                self._drop(key)  # expired: no invalidation, lookups may store
            return None
        return entry[1], entry[2]

    def put(self, key: str, user: Any, token: Any, generation: int) -> None:
        """Cache a token read at `generation`, unless revoked since."""
        with self._lock:
            if generation != self._generation:
                return
            if key not in self._entries and len(self._entries) >= self.MAX_ENTRIES:
                self._drop(next(iter(self._entries)))
            self._entries.pop(key, None)  # re-inserted last: insertion = expiry order
            self._entries[key] = (self.timer() + self.ttl, user, token)
            self._keys_by_user.setdefault(str(user.pk), set()).add(key)

    def forget_key(self, key: str) -> None:
        """Drop one token."""
        with self._lock:
            self._generation += 1
            self._drop(key)

    def forget_user(self, user_id: Any) -> None:
        """Drop every token of one user (`user_id`: the pk, or it as text)."""
        with self._lock:
            self._generation += 1
            for key in list(self._keys_by_user.get(str(user_id), ())):
                self._drop(key)

    def clear(self) -> None:
        """Drop everything: revocations may have been missed (or tests)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._keys_by_user.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        user_id = str(entry[1].pk)
        keys = self._keys_by_user.get(user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_by_user[user_id]


def token_cache() -> TokenCache:
    """This process's token cache (owned by its RealtimeSync)."""
    from sync.services import get_realtime_sync

    return get_realtime_sync().token_cache


def _now_and_on_commit(forget: Callable[[], None], using: str) -> None:
    # Now, so this process stops trusting the entry at once; again on commit,
    # in case a request re-read the row before the change was committed.
    forget()
    transaction.on_commit(forget, using=using)


def user_changed(sender, instance, using, **kwargs) -> None:
    """A user was saved (perhaps deactivated, demoted) or deleted."""
    _now_and_on_commit(lambda: token_cache().forget_user(instance.pk), using)


def token_deleted(sender, instance, using, **kwargs) -> None:
    """A token was deleted: refuse it from the next request on."""
    _now_and_on_commit(lambda: token_cache().forget_key(instance.key), using)


def connect_token_cache_signals() -> None:
    """Connect the receivers (idempotent: each has a dispatch_uid)."""
    user_model = settings.AUTH_USER_MODEL  # a lazy sender: no app registry needed
    post_save.connect(
        user_changed,
        sender=user_model,
        dispatch_uid="sync.services.token_cache.user_saved",
    )
    post_delete.connect(
        user_changed,
        sender=user_model,
        dispatch_uid="sync.services.token_cache.user_deleted",
    )
    post_delete.connect(
        token_deleted,
        sender="authtoken.Token",
        dispatch_uid="sync.services.token_cache.token_deleted",
    )


connect_token_cache_signals()
