"""Shared fixtures: users, API clients, a fresh service per test, a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket

import pytest
from _pytest.nodeid import NodeId
from django.conf import settings
from django.core.cache import cache, caches
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from sync.services import reset_services
from sync.store.memory import MemoryMessageStore

PASSWORD = "correct horse battery staple"

# Server processes are the suite's dearest fixture. Under pytest-xdist
# (`make test`: ``--dist loadgroup``) the tests of one file and ASGI server
# run on one worker, so each server a file shares is started once; these
# long groups go first, and the unit tests fill the workers after them.
FIRST = ("tests/e2e/", "tests/browser/", "tests/client/")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid
        return next((i for i, p in enumerate(FIRST) if path.startswith(p)), len(FIRST))

    items.sort(key=rank)  # stable: each file keeps its order
    # schemathesis names an item per API operation but gives them one node
    # id, and xdist's grouping schedules by node id: four would never run.
    seen = set()
    for item in items:
        if item.nodeid in seen:
            unique = f"{item.nodeid.rpartition('::')[0]}::{item.name}"
            item._id = NodeId.parse(unique)  # pytest 9 keeps the id here
        assert item.nodeid not in seen, item.nodeid
        seen.add(item.nodeid)
    for item in items:
        if rank(item) == len(FIRST):
            continue
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("server_kind", "") if callspec else ""
        group = f"{item.nodeid.split('::')[0]}[{kind}]"
        item.add_marker(pytest.mark.xdist_group(group))
        if config.getoption("dist", "no") == "loadgroup" and "@" not in item.nodeid:
            # What xdist does for the mark, which pytest 9 ignores: xdist
            # sets `_nodeid`, pytest 9 keeps the id in `_id`.
            item._id = NodeId.parse(f"{item.nodeid}@{group}")


class FakeClock:
    """A controllable stand-in for time.time."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def fresh_services():
    """Every test starts with a fresh service: an empty store, empty rate-limit
    counters, an empty token cache (reset_services resets them all)."""
    cache.clear()
    service = reset_services()
    yield service
    cache.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock) -> MemoryMessageStore:
    """The service's store, on the fake clock."""
    memory_store = MemoryMessageStore(clock=clock)
    reset_services(memory_store)
    return memory_store


@pytest.fixture
def sync_config(settings):
    """Change SYNC settings for one test: ``sync_config(MESSAGE_TTL=5)``."""

    def apply(**overrides):
        settings.SYNC = {**settings.SYNC, **overrides}

    return apply


def make_user(django_user_model, username: str, **extra):
    return django_user_model.objects.create_user(
        username=username, password=PASSWORD, **extra
    )


def token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def user(transactional_db, django_user_model):
    return make_user(django_user_model, "alice")


@pytest.fixture
def other_user(transactional_db, django_user_model):
    return make_user(django_user_model, "bob")


@pytest.fixture
def staff(transactional_db, django_user_model):
    return make_user(django_user_model, "carol", is_staff=True)


@pytest.fixture
def api_client(user) -> APIClient:
    """APIClient authenticated as `user` by token."""
    return token_client(user)


@pytest.fixture
def other_client(other_user) -> APIClient:
    return token_client(other_user)


@pytest.fixture
def staff_client(staff) -> APIClient:
    return token_client(staff)


@pytest.fixture
def anon_client(transactional_db) -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL for tests; skip without Redis unless SYNC_REQUIRE_REDIS=1."""
    import redis

    url = settings.TEST_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        reason = f"no Redis answers at {url} ({error})"
        if os.environ.get("SYNC_REQUIRE_REDIS") == "1":
            pytest.fail(f"SYNC_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return url


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_redis_cache(settings):
    """The shared cache (rate-limit counters) on a Redis nobody answers at."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    }
    yield
    caches["default"].close()


@pytest.fixture
async def ws_connect():
    """Open WebSocket connections to the real ASGI stack (config.asgi).

    ``await ws_connect(user)`` authenticates by token; ``query``, ``headers``
    and ``path`` are passed through. Returns the communicator and the first
    frame as a dict (``None`` when the server closed instead: read the close
    with ``receive_output``). Every communicator is disconnected at the end.
    """
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def connect(user=None, query: str = "", headers=None, path: str = "/ws"):
        params = []
        if user is not None:
            token, _ = await Token.objects.aget_or_create(user=user)
            params.append(f"token={token.key}")
        if query:
            params.append(query)
        url = path + ("?" + "&".join(params) if params else "")
        communicator = WebsocketCommunicator(application, url, headers=headers or [])
        opened.append(communicator)
        connected, _ = await communicator.connect()
        assert connected, "the handshake was refused"
        first = await communicator.receive_output(2)
        if first["type"] == "websocket.close":
            communicator.close_frame = first
            return communicator, None
        return communicator, json.loads(first["text"])

    yield connect
    for communicator in opened:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await communicator.disconnect()


@pytest.fixture
def session_client(user) -> APIClient:
    """A browser-like client: logged in by session, CSRF enforced."""
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    return client
