"""With REDIS_URL: the rate-limit cache and the channel layer live in Redis.

Keys go under a prefix unique to each test, and each test deletes only its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest
import redis
from channels.layers import channel_layers
from django.conf import settings

from sync.core.rates import Rate
from sync.services import get_realtime_sync
from sync.services.ratelimit import ahit_shared

pytestmark = pytest.mark.redis


@pytest.fixture
def test_prefix(redis_url):
    """A key prefix for this test; its keys are deleted afterwards."""
    prefix = f"sync-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


COUNT_ONE_HIT = """
import django, json
django.setup()
from sync.services.ratelimit import hit_shared
from sync.core.rates import Rate
print(json.dumps(hit_shared("user:1", Rate(3, 3600), now=7200.0).count))
"""


def hit_in_new_process(redis_url: str, prefix: str) -> int:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "SYNC_KEY_PREFIX": prefix,
    }
    output = subprocess.run(
        [sys.executable, "-c", COUNT_ONE_HIT],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_the_rate_limit_counter_is_shared_by_server_processes(redis_url, test_prefix):
    counts = [hit_in_new_process(redis_url, test_prefix) for _ in range(4)]

    assert counts == [1, 2, 3, 4]  # one window, one counter, every process


@pytest.fixture
def redis_layer(settings, redis_url, test_prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sync.ws.channel_layer.PubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": test_prefix},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.django_db(transaction=True)
async def test_websocket_delivery_through_channels_redis(redis_layer, ws_connect, user):
    first_tab, _ = await ws_connect(user, query="topics=ops")
    second_tab, _ = await ws_connect(user)
    sync = get_realtime_sync()

    sent = await sync.apublish("data.updated", {"rows": [1, 2]}, user.pk)
    ops = await sync.abroadcast("announcement", {"text": "deploy"}, topics=["ops"])

    for tab in (first_tab, second_tab):
        message = await tab.receive_json_from(5)
        assert (message["id"], message["payload"]) == (sent["id"], {"rows": [1, 2]})
    announcement = await first_tab.receive_json_from(5)
    assert announcement["id"] == ops["id"]
    assert await second_tab.receive_nothing(0.3)


def test_requests_share_one_redis_connection_pool_for_their_rate_limit(
    settings, redis_url, test_prefix
):
    """Every request runs in a context of its own; none opens its own pool."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": test_prefix,
        }
    }
    monitor = redis.Redis.from_url(redis_url)
    opened_before = monitor.info("stats")["total_connections_received"]

    async def forty_requests() -> list[int]:
        # One task per request, as the server runs them: a context each.
        tasks = [
            asyncio.create_task(ahit_shared("user:1", Rate(100, 3600), now=7200.0))
            for _ in range(40)
        ]
        return sorted(hit.count for hit in await asyncio.gather(*tasks))

    counts = asyncio.run(forty_requests())
    opened = monitor.info("stats")["total_connections_received"] - opened_before

    assert counts == list(range(1, 41))
    # A few pooled connections for concurrent worker threads, not one each.
    assert opened <= 10, f"{opened} Redis connections for 40 requests"
