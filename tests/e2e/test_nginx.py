"""Two instances behind nginx, with the configuration the README shows.

``deploy/nginx.conf`` is run as it is, with the ports filled in: clients talk
to nginx only, which spreads them over both instances with no stickiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.live_server import HOST, PROJECT_ROOT, LiveServer, free_port
from harness.raw_http import MIB, post, probe, request_head

pytestmark = pytest.mark.redis

NGINX_CONFIG = PROJECT_ROOT / "deploy" / "nginx.conf"
FRAME_TIMEOUT = 5.0


def nginx_binary() -> str:
    """nginx's path; skip (or fail where CI requires it) without one."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        reason = "nginx is not installed (Debian: apt-get install nginx-light)"
        if os.environ.get("SYNC_REQUIRE_NGINX") == "1":
            pytest.fail(f"SYNC_REQUIRE_NGINX=1 but {reason}")
        pytest.skip(reason)
    return found


@contextlib.contextmanager
def nginx_in_front(a: LiveServer, b: LiveServer, directory: Path):
    """nginx on a free port in front of instances A and B; its port."""
    binary = nginx_binary()
    port = free_port()
    config = (
        NGINX_CONFIG.read_text()
        .replace("${INSTANCE_A_PORT}", str(a.port))
        .replace("${INSTANCE_B_PORT}", str(b.port))
        .replace("${NGINX_PORT}", str(port))
    )
    (directory / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", "nginx.conf", "-g", "daemon off;"],
        stderr=(directory / "nginx.log").open("wb"),
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture
def behind_nginx(two_instances, tmp_path):
    """nginx in front of instances A and B of this test's own (it may stop
    one); A, B and nginx's port."""
    a, b = two_instances
    with nginx_in_front(a, b, tmp_path) as port:
        yield a, b, port


@pytest.fixture
def behind_shared_nginx(shared_two_instances, tmp_path):
    """nginx in front of the module's shared instances A and B (for tests
    that only send and read); A, B and nginx's port."""
    a, b = shared_two_instances
    with nginx_in_front(a, b, tmp_path) as port:
        yield a, b, port


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    """Return once nginx listens on `port`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "nginx exited"
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not listen")


def through(server: LiveServer, port: int) -> LiveServer:
    """A client of `server`'s users that talks to nginx instead."""
    return LiveServer(port, server.tokens, server.process, server.log_path)


async def close_code(connection) -> int | None:
    """The code the server closed `connection` with, or None if still open."""
    try:
        async with asyncio.timeout(1):
            await connection.recv()
    except ConnectionClosed as error:
        return error.rcvd.code if error.rcvd else None
    except TimeoutError:
        return None
    return None


async def messages(connection, count: int) -> list[dict]:
    """The next `count` message frames (pings skipped)."""
    found: list[dict] = []
    async with asyncio.timeout(FRAME_TIMEOUT):
        while len(found) < count:
            frame = json.loads(await connection.recv())
            if frame["type"] != "ping":
                found.append(frame)
    return found


def local_sockets(server: LiveServer) -> float:
    """The sockets open on `server` itself (its sync_connections gauge)."""
    response = server.request("GET", "/metrics", user="carol")
    assert response.status == 200, response.body
    for line in response.body.decode().splitlines():
        if line.startswith("sync_connections "):
            return float(line.split()[1])
    raise AssertionError("no sync_connections in /metrics")


async def counted_through(front: LiveServer, sockets: int) -> list[int]:
    """The connections status reports through nginx, asked 4 times (nginx
    takes turns, so both instances answer) once it reports `sockets`."""
    async with asyncio.timeout(6):  # each instance reports every 2 s
        while True:
            status = await asyncio.to_thread(front.status)
            if status["websocket"]["connections"] == sockets:
                break
            await asyncio.sleep(0.2)
    answers = [await asyncio.to_thread(front.status) for _ in range(4)]
    return [answer["websocket"]["connections"] for answer in answers]


async def test_sockets_and_senders_spread_over_both_instances_see_everything(
    behind_shared_nginx,
):
    a, b, port = behind_shared_nginx
    front = through(a, port)
    async with (
        connect(front.websocket_url("alice")) as first,
        connect(front.websocket_url("alice")) as second,
    ):
        for socket in (first, second):  # the position is fixed once established
            assert json.loads(await socket.recv())["type"] == "connection.established"
        # nginx put one socket on each instance; either counts both.
        assert (local_sockets(a), local_sockets(b)) == (1, 1)
        assert await counted_through(front, 2) == [2, 2, 2, 2]
        sent = [
            (await asyncio.to_thread(front.send, "alice", "chat.message", {"n": n}))[
                "messageId"
            ]
            for n in range(6)  # nginx spreads these over both instances
        ]
        for socket in (first, second):
            assert [frame["id"] for frame in await messages(socket, 6)] == sent


async def test_a_client_of_a_stopped_instance_resumes_on_the_other(behind_nginx):
    a, _, port = behind_nginx
    front = through(a, port)
    sockets = [await connect(front.websocket_url("bob")) for _ in range(2)]
    cursors = [json.loads(await s.recv())["payload"]["cursor"] for s in sockets]

    await asyncio.to_thread(a.stop)  # its sockets get 1001
    codes = [await close_code(socket) for socket in sockets]
    closed = [index for index, code in enumerate(codes) if code is not None]
    assert [codes[index] for index in closed] == [1001]  # one socket was on A
    while_away = [
        (await asyncio.to_thread(front.send, "bob", "chat.message", {"n": n}))[
            "messageId"
        ]
        for n in range(3)
    ]

    lost = closed[0]
    async with connect(front.websocket_url("bob", cursor=cursors[lost])) as resumed:
        established = json.loads(await resumed.recv())
        assert established["payload"]["recovered"] is True
        replayed = await messages(resumed, 3)
        assert [frame["id"] for frame in replayed] == while_away
        with pytest.raises(TimeoutError):  # nothing twice
            async with asyncio.timeout(0.5):
                await resumed.recv()
    kept = sockets[1 - lost]
    assert [frame["id"] for frame in await messages(kept, 3)] == while_away
    await kept.close()


# Limits at the edge (issue 15): nginx refuses first, in the API's error shape.

MAX_PAYLOAD_BYTES = 65536


def test_nginx_refuses_what_the_instances_would_and_passes_the_rest(
    behind_shared_nginx,
):
    a, _, port = behind_shared_nginx
    front = through(a, port)
    # The largest send the API accepts: a payload at the limit, with its envelope.
    filler = "x" * (MAX_PAYLOAD_BYTES - len('{"text": ""}'))
    largest = front.request(
        "POST",
        "/api/sync/send",
        user="alice",
        data={"type": "chat.message", "payload": {"text": filler}},
    )
    api_body = post(front, "/api", 20 * MIB, chunked=False)
    page_body = post(front, "/accounts/login/", 3 * MIB, chunked=True)
    huge_header = probe(
        front, request_head("GET", "/accounts/login/", "X-Huge: " + "a" * 100_000)
    )

    assert largest.status == 201, largest.body
    for refused in (api_body, page_body):
        assert refused.status == 413
        assert refused.json()["error"]["code"] == "payload_too_large"
        assert refused.sent < 8 * MIB
    assert huge_header.status == 400  # nginx: "Request Header Or Cookie Too Large"
