"""Blocking work (database, password hashing) from async code.

asgiref's ``sync_to_async`` runs a call on the one thread that every
thread-sensitive call of the process shares, unless told otherwise: one
slow query there delays every request that needs that thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async


def in_worker_thread(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`function` for async code, run in a thread of the event loop's pool.

    Calls run side by side (the pool holds min(32, CPUs + 4) threads), and
    Django's connection housekeeping runs before and after each one: a
    connection is closed, or kept for reuse under ``CONN_MAX_AGE`` (the
    pool's threads live as long as the process).
    """
    return database_sync_to_async(function, thread_sensitive=False)
