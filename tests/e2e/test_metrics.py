"""``/metrics`` and the log of a real server process (issue 10, SPEC §7).

Each test runs on each ASGI server; the clients are real sockets and HTTP
requests. HTTP calls run in a thread so open sockets keep reading.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from harness.live_server import LiveServer

pytestmark = pytest.mark.e2e

FRAME_TIMEOUT = 5.0
MARKER = "e2e-payload-marker-5c1d"
PUBLISHED_USER = ("sync_messages_published_total", (("kind", "user"),))
PUBLISHED_BROADCAST = ("sync_messages_published_total", (("kind", "broadcast"),))
DELIVERED_WS = ("sync_messages_delivered_total", (("transport", "websocket"),))
DELIVERED_POLLING = ("sync_messages_delivered_total", (("transport", "polling"),))
POLL_REQUESTS = ("sync_poll_requests_total", ())
LATENCY_COUNT = ("sync_delivery_latency_seconds_count", ())
CONNECTIONS = ("sync_connections", ())
# Loopback may scrape without signing in; this server is these tests' alone.
LOOPBACK = {"SYNC_METRICS_ALLOW": "127.0.0.0/8,::1"}


@pytest.fixture
def metrics_server(asgi_server) -> LiveServer:
    """A server only this module uses, so its figures move only with it."""
    return asgi_server(**LOOPBACK)


def scrape(server: LiveServer, user: str | None = "carol") -> dict[tuple, float]:
    """GET /metrics (as staff `user`); every sample by name and labels."""
    response = server.request("GET", "/metrics", user=user)
    assert response.status == 200, response.body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }


def moved(before: dict, after: dict, key: tuple) -> float:
    return after.get(key, 0) - before.get(key, 0)


async def call(function, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a heartbeat ping."""
    async with asyncio.timeout(FRAME_TIMEOUT):
        while (frame := json.loads(await ws.recv()))["type"] == "ping":
            pass
    return frame


async def test_metrics_follow_websocket_and_polling_traffic(metrics_server):
    server = metrics_server
    before = await call(scrape, server)
    async with connect(server.websocket_url("alice")) as ws:
        await next_message(ws)  # connection.established
        opened = await call(scrape, server)
        await call(server.send, "alice", "chat.note", {"n": 1})
        await call(server.broadcast, "carol", "announcement", {"n": 2})
        received = [await next_message(ws), await next_message(ws)]
        page = await call(server.poll, "bob", since=0, limit=1000)
        after = await call(scrape, server)

    assert [frame["payload"] for frame in received] == [{"n": 1}, {"n": 2}]
    assert moved(before, opened, CONNECTIONS) == 1
    assert moved(before, after, PUBLISHED_USER) == 1
    assert moved(before, after, PUBLISHED_BROADCAST) == 1
    assert moved(before, after, DELIVERED_WS) == 2
    assert moved(before, after, LATENCY_COUNT) == 2
    assert moved(before, after, POLL_REQUESTS) == 1
    assert moved(before, after, DELIVERED_POLLING) == page["count"] >= 1


def test_metrics_are_refused_to_anonymous_and_non_staff_callers(server):
    anonymous = server.request("GET", "/metrics")
    alice = server.request("GET", "/metrics", user="alice")

    assert anonymous.status == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert alice.status == 403
    assert alice.json()["error"]["code"] == "permission_denied"


def test_an_allowed_address_scrapes_without_credentials(metrics_server):
    assert CONNECTIONS in scrape(metrics_server, user=None)


def test_a_forwarded_header_does_not_pass_for_an_allowed_address(asgi_server):
    """The allow-list checks the TCP peer; any caller can write X-Forwarded-For."""
    server = asgi_server(SYNC_METRICS_ALLOW="10.0.0.5")
    forged = {"X-Forwarded-For": "10.0.0.5", "Forwarded": "for=10.0.0.5"}

    response = server.request("GET", "/metrics", headers=forged)

    assert response.status == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# The log of a whole session ---------------------------------------------------------


async def test_a_debug_log_of_a_whole_session_shows_no_payload_and_no_token(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(LOG_LEVEL="DEBUG", LOG_FORMAT="json")
    bad_token = "f" * 40
    async with connect(server.websocket_url("alice")) as ws:
        established = (await next_message(ws))["payload"]
        await ws.send(json.dumps({"type": "chat.note", "payload": {"m": MARKER}}))
        await next_message(ws)  # ack
        await next_message(ws)  # its own copy
        await ws.send(json.dumps({"type": "data.x", "payload": {"m": MARKER}}))
        refused = await next_message(ws)
        await call(server.send, "alice", "chat.note", {"m": MARKER})
        await call(server.broadcast, "carol", "announcement", {"m": MARKER})
        await call(server.poll, "alice", since=0)
    async with connect(f"{server.ws_url}?token={bad_token}") as anonymous:
        await anonymous.wait_closed()
    await asyncio.sleep(0.5)  # the close is logged once the server notices
    log = server.log()

    assert refused["payload"]["code"] == "reserved_type"
    assert anonymous.close_code == 4401
    assert MARKER not in log
    for token in (server.tokens["alice"], server.tokens["carol"], bad_token):
        assert token not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(entry["level"] == "DEBUG" for entry in entries)  # DEBUG is on
    by_message = {entry["message"]: entry for entry in entries}
    connection = {
        "connection_id": established["connectionId"],
        "user_id": int(established["userId"]),
    }
    closed = {**connection, "code": 1000}
    assert by_message["websocket connected"].items() >= connection.items()
    assert by_message["websocket closed"].items() >= closed.items()
    assert by_message["frame refused"]["code"] == "reserved_type"
    assert by_message["websocket refused"]["code"] == 4401
    assert not [line for line in log.splitlines() if re.match(r"\s*Traceback", line)]


def test_every_log_line_of_a_production_server_is_json(dedicated_asgi_server):
    server = dedicated_asgi_server(
        DJANGO_ENV="production", SECRET_KEY="s" * 20 + "-production-test-key-0123"
    )
    server.poll("alice", since=0)
    server.request("GET", "/metrics")
    server.stop()

    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= entry.keys()


# Several worker processes ---------------------------------------------------------

WORKERS = 2
# Sockets are opened a batch at a time, concurrently, until both workers hold
# some: one busy with a handshake leaves the next to the other.
SOCKET_BATCH = 6
MOST_SOCKETS = 120
SCRAPES = 8
# A worker writes its figures once it has loaded the application.
WORKERS_READY_WITHIN = 30.0


def sockets_by_worker(directory: Path) -> dict[int, float]:
    """Open sockets each worker process reports in the shared directory."""
    counts = {}
    for path in directory.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[0] == "sync_connections":
                counts[pid] = value
    return counts


async def workers_ready(directory: Path) -> None:
    """Until every worker has loaded the application (its gauge file exists).

    Polled: the files are written by other processes, nothing to await.
    """
    async with asyncio.timeout(WORKERS_READY_WITHIN):
        while len(sockets_by_worker(directory)) < WORKERS:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def open_socket(server: LiveServer) -> ClientConnection:
    ws = await connect(server.websocket_url("alice"))
    await next_message(ws)  # connection.established: it is counted
    return ws


async def test_several_workers_report_the_sum_of_all_of_them(
    dedicated_asgi_server, server_kind, redis_url, tmp_path
):
    if server_kind != "uvicorn":
        pytest.skip("daphne serves from one process; uvicorn --workers from several")
    shared = tmp_path / "metrics"
    shared.mkdir()
    server = dedicated_asgi_server(
        WEB_CONCURRENCY=WORKERS,
        PROMETHEUS_MULTIPROC_DIR=shared,
        # The kernel may hand one worker more than a user's 50 sockets first.
        SYNC_WS_MAX_CONNECTIONS_PER_USER=MOST_SOCKETS + SOCKET_BATCH,
        SYNC_WS_CONNECT_RATE=f"{MOST_SOCKETS + SOCKET_BATCH}/1m",
        REDIS_URL=redis_url,
        SYNC_KEY_PREFIX=f"sync-e2e-{uuid.uuid4().hex[:12]}",
    )
    sockets: list[ClientConnection] = []
    await workers_ready(shared)
    try:
        # Open sockets until both workers hold some (the kernel picks).
        while len(sockets) < MOST_SOCKETS and (
            len([n for n in sockets_by_worker(shared).values() if n]) < WORKERS
        ):
            batch = [open_socket(server) for _ in range(SOCKET_BATCH)]
            sockets.extend(await asyncio.gather(*batch))
        spread = sockets_by_worker(shared)
        # Each scrape is a new connection, answered by either worker.
        scrapes = [await call(scrape, server) for _ in range(SCRAPES)]
    finally:
        for ws in sockets:
            await ws.close()

    assert len([count for count in spread.values() if count]) == WORKERS, spread
    assert {page[CONNECTIONS] for page in scrapes} == {len(sockets)}
