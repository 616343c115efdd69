"""Latency figures of a real daphne process: long polls and WebSocket fan-out.

    make bench            # or: .venv/bin/python -m bench.latency

Prints figures; asserts nothing. Targets (from the issues): a long poll
answers within ~100 ms of a publish; 50 open long polls do not slow a plain
poll; a broadcast reaches 200 sockets well within a second.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from websockets.asyncio.client import connect

from harness.live_server import (
    LiveServer,
    prepare_template_database,
    start_server,
)

ROUNDS = 20
LONG_POLLS = 50
SOCKET_COUNTS = (200, 500)
BROADCASTS = 10
HANDSHAKE_CONCURRENCY = 25


def summary(name: str, seconds: list[float], target: str = "") -> None:
    """One line: median, 95th percentile and worst, in milliseconds."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    line = (
        f"{name:<48} median {statistics.median(ordered) * 1000:7.1f} ms"
        f"   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )
    print(line + (f"   (target {target})" if target else ""), flush=True)


def long_poll_wake(server: LiveServer) -> list[float]:
    """From issuing a send to the waiting long poll's answer."""
    results = []
    for round_number in range(ROUNDS):
        cursor = server.head_cursor("alice")
        answered: list[float] = []

        def wait(cursor=cursor, answered=answered):
            server.poll("alice", cursor=cursor, wait=10)
            answered.append(time.perf_counter())

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # the poll is parked by now
        sent_at = time.perf_counter()
        server.send("alice", "bench.ping", {"round": round_number})
        waiter.join()
        results.append(answered[0] - sent_at)
    return results


def plain_poll_under_long_polls(server: LiveServer) -> list[float]:
    """Plain polls while LONG_POLLS long polls wait; then release them."""
    cursor = server.head_cursor("bob")
    parked = [
        threading.Thread(
            target=server.poll, args=("bob",), kwargs={"cursor": cursor, "wait": 30}
        )
        for _ in range(LONG_POLLS)
    ]
    for thread in parked:
        thread.start()
    time.sleep(0.5)
    results = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        server.poll("alice", since=0, limit=1)
        results.append(time.perf_counter() - started)
    server.send("bob", "bench.release", {})
    for thread in parked:
        thread.join()
    return results


async def websocket_fan_out(server: LiveServer, sockets: int) -> list[float]:
    """From issuing a broadcast to its receipt on the last of `sockets`."""
    gate = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)

    async def open_socket():
        async with gate:
            connection = await connect(server.websocket_url("alice"), max_queue=None)
            await connection.recv()  # connection.established
            return connection

    connections = await asyncio.gather(*(open_socket() for _ in range(sockets)))
    results = []
    try:
        for number in range(BROADCASTS):
            sent_at = time.perf_counter()
            receipts = [asyncio.create_task(_receive(c)) for c in connections]
            await asyncio.to_thread(
                server.broadcast, "carol", "bench.news", {"n": number}
            )
            done = await asyncio.gather(*receipts)
            results.append(max(done) - sent_at)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return results


async def _receive(connection) -> float:
    while json.loads(await connection.recv())["type"] == "ping":
        pass
    return time.perf_counter()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        template = prepare_template_database(root)
        server_dir = root / "server"
        server_dir.mkdir()
        server = start_server(template, server_dir, {})
        try:
            print(f"daphne on port {server.port}, embedded defaults", flush=True)
            summary(
                "long poll: send -> long poll answered",
                long_poll_wake(server),
                "~100 ms",
            )
            summary(
                f"plain poll with {LONG_POLLS} long polls open",
                plain_poll_under_long_polls(server),
                "quick",
            )
            for count in SOCKET_COUNTS:
                figures = asyncio.run(websocket_fan_out(server, count))
                summary(f"websocket: broadcast -> last of {count} sockets", figures)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
