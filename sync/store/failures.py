"""A store that cannot serve, as the rest of the project sees it: one rule.

Redis unreachable, too slow, out of memory, or a read-only replica after a
failover: the store cannot serve now, which clients see as 503
``store_unavailable`` (HTTP) or an error frame then 1011 (WebSocket). The
same goes for the rate-limit counters and the channel layer when they live
in that Redis. The Redis client is never imported here: an error can only
come from it once something configured for Redis has loaded it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from functools import lru_cache

from sync.core.exceptions import StoreUnavailable


@lru_cache(maxsize=1)
def _redis_down_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.OutOfMemoryError,
        redis.exceptions.ReadOnlyError,
    )


def is_store_down(error: BaseException) -> bool:
    """True if `error` says the store's Redis cannot serve right now."""
    if "redis" not in sys.modules:
        return False
    return isinstance(error, _redis_down_errors())


@contextlib.contextmanager
def unavailable_when_down() -> Iterator[None]:
    """Re-raise the store's Redis failing to serve as StoreUnavailable."""
    try:
        yield
    except Exception as error:
        if is_store_down(error):
            raise StoreUnavailable() from error
        raise
