"""The service layer's entry points (sync/services/__init__.py): the store
that REDIS_URL selects.
"""

from __future__ import annotations

from sync.services import create_store
from sync.store.memory import MemoryMessageStore
from sync.store.redis import RedisMessageStore


def test_redis_url_selects_the_redis_store(sync_config, settings, redis_prefix):
    sync_config(REDIS_URL="redis://127.0.0.1:6379/15")
    settings.SYNC_STORE_KEY_PREFIX = redis_prefix

    store = create_store()

    assert isinstance(store, RedisMessageStore)
    assert store._prefix == redis_prefix


def test_without_redis_url_the_store_is_in_memory(sync_config):
    sync_config(REDIS_URL=None)

    assert isinstance(create_store(), MemoryMessageStore)
