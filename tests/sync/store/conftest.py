"""Stores for the tests of sync/store: a Redis store under a key prefix of its
own, and a second instance on the same prefix.
"""

from __future__ import annotations

import pytest

from sync.store.redis import RedisMessageStore


@pytest.fixture
async def redis_store(redis_url, redis_prefix, clock) -> RedisMessageStore:
    store = RedisMessageStore(redis_url, prefix=redis_prefix, clock=clock)
    yield store
    await store.aclose()  # on the test's loop, before it closes


@pytest.fixture
async def twin_store(redis_url, redis_prefix, clock) -> RedisMessageStore:
    """A second instance on the same Redis and prefix as `redis_store`."""
    store = RedisMessageStore(redis_url, prefix=redis_prefix, clock=clock)
    yield store
    await store.aclose()
