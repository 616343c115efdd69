"""Fixtures running a real server process (see harness/live_server.py).

``asgi_server(**env)`` returns a server for those environment overrides;
tests asking for the same ``env`` share one server for the whole session.
``dedicated_asgi_server(**env)`` starts a server nobody else uses (for tests
that stop it, restart it, or count exactly what it holds), stopped at the end
of the test. A server that fails to start fails the test with its log.

Every server can be restarted on the same port and database
(``server.restart()``: SIGTERM, wait for the exit, start again), and runs
management commands on its database from another process
(``server.shell(code)``, ``server.create_users(...)``).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.servers import SERVERS
from harness.live_server import (
    LiveServer,
    ServerFailed,
    TemplateDatabase,
    prepare_template_database,
    start_server,
)

# Every end-to-end test runs on each supported ASGI server (SPEC §1);
# SYNC_E2E_SERVERS=uvicorn (or daphne) narrows it while developing.
E2E_SERVERS = [
    kind.strip()
    for kind in os.environ.get("SYNC_E2E_SERVERS", ",".join(SERVERS)).split(",")
    if kind.strip()
]


def start_or_fail(
    template: TemplateDatabase,
    directory: Path,
    overrides: dict[str, str],
    kind: str,
) -> LiveServer:
    try:
        return start_server(template, directory, overrides, kind)
    except ServerFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session", params=E2E_SERVERS)
def server_kind(request) -> str:
    """The ASGI server under test: each e2e test runs once per server."""
    return request.param


@pytest.fixture(scope="session")
def e2e_template_database(tmp_path_factory, worker_id) -> TemplateDatabase:
    """Migrate once per run (slow), with alice, bob and staff carol: under
    pytest-xdist the first worker makes it, the others wait and copy it."""
    if worker_id == "master":
        return prepare_template_database(tmp_path_factory.mktemp("e2e-template"))
    shared = tmp_path_factory.getbasetemp().parent / "e2e-template"
    tokens = shared / "tokens.json"
    with shared.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tokens.exists():
            shared.mkdir(exist_ok=True)
            made = prepare_template_database(shared)
            tokens.write_text(json.dumps(made.tokens))
    return TemplateDatabase(shared / "db.sqlite3", json.loads(tokens.read_text()))


@pytest.fixture(scope="session")
def asgi_server(
    e2e_template_database, tmp_path_factory, server_kind
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: ``asgi_server(SYNC_HEARTBEAT_INTERVAL=1)`` -> a running server.

    Servers are cached by their environment overrides for the whole session.
    """
    servers: dict[tuple[tuple[str, str], ...], LiveServer] = {}

    def get(**env: Any) -> LiveServer:
        key = tuple(sorted((name, str(value)) for name, value in env.items()))
        if key not in servers:
            directory = tmp_path_factory.mktemp(f"e2e-{server_kind}")
            servers[key] = start_or_fail(
                e2e_template_database, directory, dict(key), server_kind
            )
        server = servers[key]
        if server.process.poll() is not None:
            pytest.fail(f"{server_kind} (env {dict(key)}) has died:\n{server.log()}")
        return server

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def server(asgi_server) -> LiveServer:
    """The server with the embedded defaults and no overrides."""
    return asgi_server()


@pytest.fixture
def dedicated_asgi_server(
    e2e_template_database, tmp_path_factory, server_kind
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: a new, unshared server per call, stopped when the test ends.

    For tests that stop the server themselves, or that need figures (such as
    connection counts) no other test can have touched.
    """
    started: list[LiveServer] = []

    def start(**env: Any) -> LiveServer:
        directory = tmp_path_factory.mktemp(f"e2e-dedicated-{server_kind}")
        overrides = {name: str(value) for name, value in env.items()}
        started.append(
            start_or_fail(e2e_template_database, directory, overrides, server_kind)
        )
        return started[-1]

    yield start
    for server in started:
        server.stop()


# Long enough that a message reaching a socket only through the heartbeat's
# catch-up would show in the two-instance tests.
TWO_INSTANCE_HEARTBEAT = 30


def two_instance_env(redis_url: str) -> dict[str, str]:
    """Instances on one Redis, under a key prefix of their own."""
    return {
        "REDIS_URL": redis_url,
        "SYNC_KEY_PREFIX": f"sync-e2e-{uuid.uuid4().hex[:12]}",
        "SYNC_HEARTBEAT_INTERVAL": str(TWO_INSTANCE_HEARTBEAT),
    }


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def two_instances(redis_url, dedicated_asgi_server):
    """Instances A and B on one Redis, for this test alone (it may stop one)."""
    env = two_instance_env(redis_url)
    yield dedicated_asgi_server(**env), dedicated_asgi_server(**env)
    delete_prefix(redis_url, env["SYNC_KEY_PREFIX"])


@pytest.fixture(scope="module")
def shared_two_instances(
    redis_url, e2e_template_database, tmp_path_factory, server_kind
):
    """Instances A and B on one Redis, shared by a module's tests that only
    send, read and count their own sockets (each closes what it opens)."""
    env = two_instance_env(redis_url)
    started: list[LiveServer] = []
    try:
        for _ in "AB":
            directory = tmp_path_factory.mktemp(f"e2e-shared-{server_kind}")
            started.append(
                start_or_fail(e2e_template_database, directory, env, server_kind)
            )
        yield tuple(started)
    finally:
        for server in started:
            server.stop()
        delete_prefix(redis_url, env["SYNC_KEY_PREFIX"])
