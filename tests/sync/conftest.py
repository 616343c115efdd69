"""Fixtures shared by the wings of tests/sync."""

from __future__ import annotations

import uuid

import pytest
import redis

from sync.http.fast_path import ApiHandler


@pytest.fixture
def api_app() -> ApiHandler:
    return ApiHandler()


@pytest.fixture
def test_prefix(redis_url):
    """A key prefix for this test; its keys are deleted afterwards."""
    prefix = f"sync-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix owned by this test; its keys are deleted afterwards."""
    prefix = f"test:store:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()
