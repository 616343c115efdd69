"""Long polling at scale on a real server (issue 7, the lean HTTP path).

Clients are raw asyncio sockets in this process (one request per
connection), so a thousand of them cost no thread here either. Figures are
printed (``pytest -s``); the asserted bounds leave room for a loaded 2-core
CI machine that runs the clients too (targets: wake-up p99 under 250 ms,
the broadcast answered in under 100 ms).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from harness.live_server import HOST, LiveServer

pytestmark = pytest.mark.e2e

THREAD_CHECK_POLLS = 300
WAKE_POLLS = 1000
# Connections opened at once: daphne listens with a backlog of 50.
CONNECT_CONCURRENCY = 25
# Every long poll answered within this many seconds of the broadcast.
WAKE_BOUND = 2.0
# A request made while the long polls wait, and the broadcast that wakes them.
REQUEST_BOUND = 1.0
# Threads a server may start on its own meanwhile (a worker of its pool).
THREAD_SLACK = 2


def scale_env(polls: int) -> dict[str, str]:
    """One user may hold every poll, and the rate limit never gets in the way."""
    return {
        "SYNC_POLL_MAX_WAITING_PER_USER": str(polls),
        "SYNC_RATE_LIMIT": "1000000/15m",
        "SYNC_POLL_MAX_WAIT": "30",
    }


@dataclass
class Answer:
    """Status and JSON body of one answer, and when it arrived."""

    status: int
    body: dict
    arrived: float


class RawClient:
    """HTTP/1.1 over asyncio streams: one request per connection."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def send(self, method: str, path: str, user: str, data=None):
        """Connect and send; returns the reader to pass to `answer`."""
        body = b"" if data is None else json.dumps(data).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
            f"Authorization: Token {self.server.tokens[user]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        async with self.connecting:
            reader, writer = await asyncio.open_connection(HOST, self.server.port)
        writer.write(head.encode() + body)
        await writer.drain()
        return reader, writer

    @staticmethod
    async def answer(connection) -> Answer:
        """Read the whole answer (the server closes the connection)."""
        reader, writer = connection
        raw = await reader.read()
        arrived = time.monotonic()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        status = int(head.split(b" ", 2)[1])
        return Answer(status, json.loads(body), arrived)

    async def request(self, method: str, path: str, user: str, data=None) -> Answer:
        return await self.answer(await self.send(method, path, user, data))


def dechunk(body: bytes) -> bytes:
    parts = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append(body[:size])
        body = body[size + 2 :]
    return b"".join(parts)


def thread_count(server: LiveServer) -> int:
    """Threads of the server process now (Linux /proc)."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)[1])


def poll_path(**params) -> str:
    return f"/api/sync/poll?{urlencode(params)}"


async def park_long_polls(client: RawClient, count: int, since: int) -> list:
    """Send `count` long polls of alice; return their pending answers."""
    connections = await asyncio.gather(
        *(
            client.send("GET", poll_path(since=since, wait=25), "alice")
            for _ in range(count)
        )
    )
    answers = [asyncio.ensure_future(client.answer(c)) for c in connections]
    # Let the server read and park every one of them.
    await asyncio.sleep(max(1.0, count / 400))
    assert not any(answer.done() for answer in answers), "answered before a message"
    return answers


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def test_waiting_long_polls_hold_no_server_thread(dedicated_asgi_server):
    server = dedicated_asgi_server(**scale_env(THREAD_CHECK_POLLS))
    client = RawClient(server)
    first = await client.request("GET", poll_path(since=0), "alice")
    # One round of every kind of request first, so the server's pools exist.
    await client.request("GET", "/api/sync/status", "alice")
    before = thread_count(server)
    answers = await park_long_polls(client, THREAD_CHECK_POLLS, first.body["timestamp"])
    waiting = thread_count(server)
    await client.request("POST", "/api/sync/send", "alice", {"type": "wake.up"})
    results = await asyncio.gather(*answers)
    print(
        f"\n{server.kind}: {before} threads before, {waiting} with "
        f"{THREAD_CHECK_POLLS} long polls waiting"
    )
    assert waiting <= before + THREAD_SLACK
    assert {result.status for result in results} == {200}


async def test_thousand_long_polls_wake_promptly_on_one_broadcast(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(**scale_env(WAKE_POLLS))
    client = RawClient(server)
    first = await client.request("GET", poll_path(since=0), "alice")
    answers = await park_long_polls(client, WAKE_POLLS, first.body["timestamp"])

    started = time.monotonic()
    sent = await client.request("POST", "/api/sync/send", "bob", {"type": "chat"})
    send_ms = (time.monotonic() - started) * 1000
    message = {"type": "announcement", "payload": {"text": "wake up"}}
    started = time.monotonic()
    broadcast = await client.request("POST", "/api/sync/broadcast", "carol", message)
    broadcast_ms = (time.monotonic() - started) * 1000
    results = await asyncio.gather(*answers)
    wake_ms = [(result.arrived - started) * 1000 for result in results]

    print(
        f"\n{server.kind}, {WAKE_POLLS} long polls waiting: POST /send "
        f"{send_ms:.1f} ms; broadcast answered in {broadcast_ms:.1f} ms; polls "
        f"woken p50 {percentile(wake_ms, 0.5):.0f} ms, p99 "
        f"{percentile(wake_ms, 0.99):.0f} ms, last {max(wake_ms):.0f} ms"
    )
    assert sent.status == 201, sent.body
    assert broadcast.status == 201, broadcast.body
    for result in results:
        assert result.status == 200, result.body
        ids = [m["id"] for m in result.body["messages"]]
        assert ids == [broadcast.body["messageId"]]
    assert send_ms < REQUEST_BOUND * 1000
    assert broadcast_ms < REQUEST_BOUND * 1000
    assert max(wake_ms) < WAKE_BOUND * 1000
