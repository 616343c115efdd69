"""Fixed-window counters: one in the shared cache, one per connection."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.dispatch import receiver

from sync.exceptions import StoreUnavailable
from sync.rates import Rate
from sync.services.redis_store import REDIS_DOWN

CACHE_PREFIX = "sync:ratelimit"
# Caches that never leave the process (a dict under a lock, no I/O): cheap
# enough to call on the event loop.
IN_PROCESS_CACHES = (LocMemCache, DummyCache)


_process_cache: BaseCache | None = None


def shared_cache() -> BaseCache:
    """One client of the default cache for the whole process.

    ``django.core.cache.cache`` is a new backend object in every asyncio
    context, and the lean /api/ path runs each request in a context of its
    own: with RedisCache that is a new connection pool, hence a new TCP
    connection to Redis, per request. Cache backends are thread-safe (redis-py
    pools are), so one object serves every request and worker thread.
    """
    global _process_cache
    if _process_cache is None:
        _process_cache = caches.create_connection(DEFAULT_CACHE_ALIAS)
    return _process_cache


@receiver(setting_changed)
def _forget_shared_cache(*, setting: str, **kwargs) -> None:
    """Tests that override CACHES get a client of the new cache."""
    global _process_cache
    if setting == "CACHES":
        _process_cache = None


@dataclass(frozen=True, slots=True)
class Hit:
    """The count in the current window after this hit, and when it ends."""

    count: int
    retry_after: int  # whole seconds until the window ends

    def over(self, rate: Rate) -> bool:
        """True when this hit is beyond the rate's limit."""
        return self.count > rate.limit


def hit_shared(identity: str, rate: Rate, now: float | None = None) -> Hit:
    """Count one event for `identity` in the cache shared by all processes.

    One atomic increment per event (one round trip to Redis); only the first
    event of a window also creates the key, which expires with the window.
    """
    now = time.time() if now is None else now
    window = int(now // rate.window)
    key = f"{CACHE_PREFIX}:{identity}:{rate.window}:{window}"
    count = _increment(key, timeout=rate.window + 1)
    retry_after = max(1, math.ceil((window + 1) * rate.window - now))
    return Hit(count, retry_after)


async def ahit_shared(identity: str, rate: Rate, now: float | None = None) -> Hit:
    """hit_shared from async code, never blocking the event loop.

    An in-process cache is called inline. Any other (RedisCache) runs the
    sync, atomic increment in a worker thread of the default pool: Django
    5.2's ``cache.aincr`` is not an async INCR but a get then a set (not
    atomic across processes, and the set resets the key's expiry), each
    through ``sync_to_async`` on the one thread all thread-sensitive calls
    share; RedisCache has no native async API.
    """
    if isinstance(shared_cache(), IN_PROCESS_CACHES):
        return hit_shared(identity, rate, now)
    return await sync_to_async(hit_shared, thread_sensitive=False)(identity, rate, now)


def _increment(key: str, timeout: int) -> int:
    # With REDIS_URL the counters live in the store's Redis: out of reach, it
    # is the store that is unavailable (503), not a server error (500).
    try:
        return _increment_counter(key, timeout)
    except REDIS_DOWN as error:
        raise StoreUnavailable() from error


def _increment_counter(key: str, timeout: int) -> int:
    cache = shared_cache()
    try:
        return cache.incr(key)
    except ValueError:  # no counter yet in this window
        if cache.add(key, 1, timeout=timeout):
            return 1
        return cache.incr(key)  # another process created it meanwhile


class LocalWindowCounter:
    """Counts events of one connection; no shared state, no I/O."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self.window_start = clock()
        self.count = 0

    def hit(self) -> int:
        """Count one event; return the count in the current window."""
        now = self.clock()
        if now - self.window_start >= self.rate.window:
            self.window_start, self.count = now, 0
        self.count += 1
        return self.count
