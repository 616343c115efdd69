"""What every sync_* management command needs: the store the servers share.

A command runs in a process of its own. With the in-memory store the
messages and figures live inside the server process, out of its reach, so
the commands refuse plainly instead of reporting an empty store of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from sync.core.exceptions import StoreUnavailable, SyncError
from sync.services import RealtimeSync, get_realtime_sync

IN_MEMORY_NOTICE = (
    "The in-memory message store lives inside the server process, so this "
    "command cannot see or change it. Set REDIS_URL (the same as the "
    "server's) to share the store with commands; meanwhile the server's "
    "figures are at /admin/sync/monitor/ and GET /api/sync/status."
)


def shared_realtime_sync() -> RealtimeSync:
    """The service on the shared (Redis) store, or CommandError."""
    sync = get_realtime_sync()
    if not sync.store.shared:
        raise CommandError(IN_MEMORY_NOTICE)
    return sync


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Store outages and rule violations become CommandError (exit 1)."""
    try:
        yield
    except StoreUnavailable as error:
        message = f"The message store is unavailable: {error.message}"
        raise CommandError(message) from None
    except SyncError as error:
        field = error.details.get("field")
        where = f"--{field}: " if field else ""
        raise CommandError(f"{where}{error.message} ({error.code})") from None


def queue_of_user(user_id: str) -> str | None:
    """The queue id servers use for this user (``str(pk)``), or None if unknown.

    ``--user 01`` or `` 1`` finds user 1, but a queue named after the raw text
    would be one no socket or poll ever reads.
    """
    try:
        user = get_user_model().objects.filter(pk=user_id.strip()).first()
    except (ValueError, ValidationError):
        return None
    return None if user is None else str(user.pk)
