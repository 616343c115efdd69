"""Fixed-window counters: shared by every process, or one per connection.

Shared counters live in Redis when the default cache is Django's RedisCache
(``REDIS_URL`` set): one atomic increment per event, a key per identity and
window that expires with the window, so every instance counts together
(Redis must run ``noeviction``, as the store already requires). Otherwise
they live in this process, in a ``CounterTable`` per scope that drops only
windows that have ended: never in Django's LocMemCache, which evicts live
counters once it holds 300 (nor in another cache that may evict them).

Scopes keep apart what is counted: ``api`` (``SYNC_RATE_LIMIT``), WebSocket
handshakes, login failures. Each scope's table has its own bound, so a
flood counted in one cannot crowd out the counters of another.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver

from sync.core.conf import sync_settings
from sync.core.rates import Rate
from sync.services.counter_table import CounterTable, Hit, window_of
from sync.store.failures import unavailable_when_down

__all__ = [
    "Hit",
    "LocalWindowCounter",
    "agive_back_shared",
    "ahit_shared",
    "apeek_shared",
    "give_back_shared",
    "hit_shared",
]

CACHE_PREFIX = "sync:ratelimit"
API_SCOPE = "api"
# The clock of shared counters when the caller gives no time (tests set it).
clock: Callable[[], float] = time.time

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


def counters_in_redis() -> bool:
    """True when shared counters go to Redis (the default cache is Redis)."""
    return isinstance(shared_cache(), RedisCache)


class CounterTables:
    """This process's counter tables, one per kind of limit (`scope`).

    Owned by the process's RealtimeSync: ``reset_services()`` starts them
    afresh with everything else.
    """

    def __init__(self) -> None:
        self._tables: dict[str, CounterTable] = {}

    def table(self, scope: str) -> CounterTable:
        """The table for `scope`, created on first use."""
        table = self._tables.get(scope)
        if table is None:
            table = self._tables.setdefault(
                scope, CounterTable(sync_settings.RATE_LIMIT_MAX_COUNTERS)
            )
        return table


def counter_table(scope: str) -> CounterTable:
    """This process's table for `scope`."""
    from sync.services import get_realtime_sync

    return get_realtime_sync().counters.table(scope)


@receiver(setting_changed)
def _forget_shared_cache(*, setting: str, **kwargs) -> None:
    """Tests that override CACHES get a client of the new cache."""
    global _process_cache
    if setting == "CACHES":
        _process_cache = None


def hit_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> Hit:
    """Count one event for `identity` where every process counts it."""
    now = clock() if now is None else now
    if not counters_in_redis():
        return counter_table(scope).hit(identity, rate, now)
    number, retry_after = window_of(now, rate)
    key = f"{CACHE_PREFIX}:{scope}:{identity}:{rate.window}:{number}"
    return Hit(_increment(key, timeout=rate.window + 1), retry_after)


def peek_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> Hit:
    """The count of `identity` in the current window so far; counts nothing."""
    now = clock() if now is None else now
    if not counters_in_redis():
        return counter_table(scope).peek(identity, rate, now)
    number, retry_after = window_of(now, rate)
    key = f"{CACHE_PREFIX}:{scope}:{identity}:{rate.window}:{number}"
    with unavailable_when_down():
        return Hit(int(shared_cache().get(key, 0)), retry_after)


async def ahit_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> Hit:
    """hit_shared from async code, never blocking the event loop.

    The in-process table is called inline. Redis is called from a worker
    thread of the default pool, with the sync, atomic increment: Django
    5.2's ``cache.aincr`` is not an async INCR but a get then a set (not
    atomic across processes, and the set resets the key's expiry), each
    through ``sync_to_async`` on the one thread all thread-sensitive calls
    share; RedisCache has no native async API.
    """
    if not counters_in_redis():
        return hit_shared(identity, rate, now, scope=scope)
    counting = sync_to_async(hit_shared, thread_sensitive=False)
    return await counting(identity, rate, now, scope=scope)


async def apeek_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> Hit:
    """peek_shared from async code (see ahit_shared)."""
    if not counters_in_redis():
        return peek_shared(identity, rate, now, scope=scope)
    peeking = sync_to_async(peek_shared, thread_sensitive=False)
    return await peeking(identity, rate, now, scope=scope)


def _increment(key: str, timeout: int) -> int:
    # The counters live in the store's Redis: out of reach, it is the store
    # that is unavailable (503), not a server error (500).
    with unavailable_when_down():
        return _increment_counter(key, timeout)


def _increment_counter(key: str, timeout: int) -> int:
    """INCR and EXPIRE in one transaction: a counter never outlives its
    window for want of an expiry (Redis runs ``noeviction``)."""
    client, name = _redis_client_and_key(key)
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(name)
        pipe.expire(name, timeout)
        count, _ = pipe.execute()
    return int(count)


def _redis_client_and_key(key: str):
    """Django's RedisCache: its client for `key`, and the key as it stores it."""
    cache = shared_cache()
    name = cache.make_and_validate_key(key)
    return cache._cache.get_client(name, write=True), name


# Decrements a counter only while it exists: a refund never creates a key.
GIVE_BACK_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def give_back_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> None:
    """Uncount one event `hit_shared` counted in this window (a refund).

    For limits that count an attempt before its outcome is known (so
    concurrent attempts cannot all pass a check that counts afterwards), and
    refund the attempts that do not count (a login that succeeds).
    """
    now = clock() if now is None else now
    if not counters_in_redis():
        counter_table(scope).give_back(identity, rate, now)
        return
    number, _ = window_of(now, rate)
    client, name = _redis_client_and_key(
        f"{CACHE_PREFIX}:{scope}:{identity}:{rate.window}:{number}"
    )
    with unavailable_when_down():
        client.eval(GIVE_BACK_SCRIPT, 1, name)


async def agive_back_shared(
    identity: str, rate: Rate, now: float | None = None, *, scope: str = API_SCOPE
) -> None:
    """give_back_shared from async code (see ahit_shared)."""
    if not counters_in_redis():
        give_back_shared(identity, rate, now, scope=scope)
        return
    giving = sync_to_async(give_back_shared, thread_sensitive=False)
    await giving(identity, rate, now, scope=scope)


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
