"""Management commands against a running server sharing their Redis (SPEC §7).

``sync_publish`` runs as a ``manage.py`` process of its own and reaches a
socket open on the server; ``sync_stats`` counts that socket (reported by the
server through Redis) and ``sync_purge`` empties the user's queue. The admin
monitor of the server lists it as a live instance. (That broadcasts are
recorded with source command is checked in tests/sync/management/test_commands.py.)

The commands talk to Redis, not to the ASGI server, and cross-process
delivery runs on both servers in test_two_instances.py: this runs on the
default server only, to keep the suite short.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
import redis
from websockets.asyncio.client import connect

from config.servers import DEFAULT_SERVER
from harness.live_server import PROJECT_ROOT, child_env

pytestmark = pytest.mark.redis

# The server reports its sockets to Redis every 2 s; a loaded CI machine
# gets some slack on top.
REPORTED_WITHIN_SECONDS = 10.0


async def manage(server, *args: str) -> subprocess.CompletedProcess:
    """``manage.py <args>`` with the server's environment (database, Redis)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=child_env(server.database, server.overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def next_message(socket, timeout: float = 5.0) -> dict:
    """The next frame that is a message (pings are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame["type"] != "ping":
                return frame


async def stats_once_reported(server) -> dict:
    """``sync_stats --json`` once it counts the server's one socket."""
    async with asyncio.timeout(REPORTED_WITHIN_SECONDS):
        while True:
            done = await manage(server, "sync_stats", "--json")
            assert done.returncode == 0, done.stderr
            figures = json.loads(done.stdout)
            if figures["status"]["websocket"]["connections"] == 1:
                return figures
            await asyncio.sleep(0.5)


@pytest.fixture
def redis_server(redis_url, dedicated_asgi_server, server_kind):
    """The default server on Redis, under a key prefix of this test's own."""
    if server_kind != DEFAULT_SERVER:
        pytest.skip(f"runs on {DEFAULT_SERVER} only (see the module docstring)")
    prefix = f"sync-e2e-commands-{uuid.uuid4().hex[:12]}"
    yield dedicated_asgi_server(REDIS_URL=redis_url, SYNC_KEY_PREFIX=prefix)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


async def test_commands_act_on_the_store_a_running_server_shares(redis_server):
    server = redis_server
    async with connect(server.websocket_url("alice")) as socket:
        alice = json.loads(await socket.recv())["payload"]["userId"]

        published = await manage(
            server, "sync_publish", "--user", alice, "--type", "data.updated",
            "--payload", '{"section": "orders", "data": {"open": 3}}',
        )  # fmt: skip
        frame = await next_message(socket)
        assert published.returncode == 0, published.stderr
        assert published.stdout == f"Published {frame['id']} to user {alice}.\n"
        assert frame["payload"] == {"section": "orders", "data": {"open": 3}}

        figures = await stats_once_reported(server)
        assert figures["queues"]["largest"] == [
            {"queue": alice, "messages": 1, "username": "alice"}
        ]
        [instance] = figures["instances"]
        assert instance["connections"] == 1

        cookie = await asyncio.to_thread(server.session_cookie, "carol")
        monitor = await asyncio.to_thread(
            server.request,
            "GET",
            "/admin/sync/monitor/figures/",
            headers={"Cookie": cookie},
        )
        [seen_by_admin] = monitor.json()["instances"]
        assert seen_by_admin["thisProcess"] is True
        assert seen_by_admin["instanceId"] == instance["instanceId"]

        purged = await manage(server, "sync_purge", "--user", alice)
        assert purged.stdout == f"Dropped 1 message from user {alice}'s queue.\n"
        page = await asyncio.to_thread(server.poll, "alice", since=0)
        assert (page["messages"], page["gap"]) == ([], True)

        announced = await manage(
            server, "sync_publish", "--broadcast", "--type", "announcement",
            "--payload", '{"text": "maintenance at 6"}',
        )  # fmt: skip
        broadcast = await next_message(socket)
        assert announced.stdout == f"Broadcast {broadcast['id']} to everyone.\n"
