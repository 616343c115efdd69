"""Fixed-window counters (sync/services/ratelimit.py): shared by the server
processes through Redis, counted inline or in a worker thread, and the shared
cache out of reach.

Keys go under a prefix unique to each test, and each test deletes only its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid

import pytest
import redis
from django.conf import settings

from sync.core.rates import Rate, parse_rate
from sync.services import ratelimit
from sync.services.ratelimit import ahit_shared
from tests.sync.http.asgi_calls import empty_token_cache  # noqa: F401

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


@pytest.mark.redis
def test_the_rate_limit_counter_is_shared_by_server_processes(redis_url, test_prefix):
    counts = [hit_in_new_process(redis_url, test_prefix) for _ in range(4)]

    assert counts == [1, 2, 3, 4]  # one window, one counter, every process


@pytest.mark.redis
def test_requests_share_one_redis_connection_pool_for_their_rate_limit(
    settings, redis_url, test_prefix, monkeypatch
):
    """Every request runs in a context of its own; none opens its own pool."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": test_prefix,
        }
    }
    # Sockets this process opens (Redis's own count includes other processes').
    opened_sockets = []
    open_socket = redis.connection.Connection._connect

    def counted(connection):
        opened_sockets.append(connection)
        return open_socket(connection)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted)

    async def forty_requests() -> list[int]:
        # One task per request, as the server runs them: a context each.
        tasks = [
            asyncio.create_task(ahit_shared("user:1", Rate(100, 3600), now=7200.0))
            for _ in range(40)
        ]
        return sorted(hit.count for hit in await asyncio.gather(*tasks))

    counts = asyncio.run(forty_requests())
    opened = len(opened_sockets)

    assert counts == list(range(1, 41))
    # A few pooled connections for concurrent worker threads, not one each.
    assert opened <= 10, f"{opened} Redis connections for 40 requests"


# Counted inline or in a worker thread -----------------------------------------


@pytest.mark.redis
async def test_rate_limit_in_redis_counts_in_a_worker_thread(
    settings, redis_url, monkeypatch
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"sync-test-{uuid.uuid4().hex[:12]}",
        }
    }
    threads = []
    increment = ratelimit._increment

    def recorded(key, timeout):
        threads.append(threading.get_ident())
        return increment(key, timeout)

    monkeypatch.setattr(ratelimit, "_increment", recorded)
    rate = parse_rate("5/1m")
    counts = [(await ratelimit.ahit_shared("ip:1", rate, now=60.0)).count for _ in "ab"]
    assert counts == [1, 2]
    assert threads
    assert threading.get_ident() not in threads


async def test_rate_limit_in_process_counts_inline(monkeypatch):
    threads = []
    hit = ratelimit.CounterTable.hit

    def recorded(table, *args, **kwargs):
        threads.append(threading.get_ident())
        return hit(table, *args, **kwargs)

    monkeypatch.setattr(ratelimit.CounterTable, "hit", recorded)
    rate = parse_rate("5/1m")
    counts = [(await ratelimit.ahit_shared("ip:1", rate, now=60.0)).count for _ in "ab"]
    assert counts == [1, 2]
    assert threads == [threading.get_ident()] * 2  # on the event loop's thread


# The rate-limit cache out of reach ---------------------------------------------


def test_an_unreachable_rate_limit_cache_answers_503(
    api_client, unreachable_redis_cache
):
    response = api_client.post(
        "/api/sync/send", {"type": "chat.message", "payload": {}}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response["Retry-After"] == "2"
