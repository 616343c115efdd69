"""Which channels-redis layer carries what still rides on the channel layer.

    .venv/bin/python -m bench.channel_layers [--sockets 1000] [--pings 300]
                                             [--messages 2000] [--idle-seconds 10]

Messages never travel on the channel layer (sync/services/hub.py). With
REDIS_URL it still gives every socket a channel and puts it in its user's
group, so that a revocation (sync/services/revocation.py: one group_send to
the user's group) reaches the sockets of other processes. What matters is
therefore the cost per socket of joining and leaving, of staying idle (CPU,
Redis commands per second), and how fast one group_send crosses processes.

For each layer, a peer process (``bench.layer_peer``) holds the sockets: a
channel each, each in a group of its own user, every channel awaiting
``receive`` as a consumer does. This process joins them all at once (a
reconnect storm), lets them idle, pings one through its group (the peer
answers through a group this process listens on), sends a stream of group
messages, restarts Redis under them, then makes them all leave. It runs on
a redis-server of its own, so the command counts are the layers' alone.
Prints one table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.layer_peer import PONG_GROUP, make_layer, user_group
from bench.redis_tools import private_redis
from bench.report import percentile
from bench.servers import PROJECT_ROOT, process_cpu_seconds

ANSWER_TIMEOUT = 120.0
DRAIN_SECONDS = 2.0
# After Redis restarts: a pause for reconnecting, then this many group_sends
# a second apart (the first may fail on a dead pooled connection).
RESTART_PAUSE_SECONDS = 2.0
RESTART_SENDS = 5


@dataclass
class Figures:
    """What one layer cost."""

    layer: str
    join_s: float = 0.0
    join_errors: int = 0
    join_commands: int = 0
    idle_cpu_share: float = 0.0
    idle_commands_per_s: float = 0.0
    idle_redis_cpu_share: float = 0.0
    ping_p50_ms: float | None = None
    ping_p99_ms: float | None = None
    sent_per_s: float = 0.0
    received: int = 0
    lost: int = 0
    leave_s: float = 0.0
    leave_errors: int = 0
    after_restart: int = 0  # of RESTART_SENDS sent once Redis is back
    restart_errors: int = 0  # receive errors the sockets saw (a consumer dies)
    notes: list[str] = field(default_factory=list)


class PeerProcess:
    """The driver's handle on a peer."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, kind: str, url: str) -> PeerProcess:
        """Start a peer holding a layer of `kind`."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.layer_peer",
            "--layer",
            kind,
            "--url",
            url,
            cwd=PROJECT_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        peer = cls(process)
        await peer.answer("READY")
        return peer

    async def ask(self, command: str) -> dict[str, Any]:
        """Send one command; its answer."""
        self.process.stdin.write(f"{command}\n".encode())
        return await self.answer(command.split()[0])

    async def answer(self, tag: str) -> dict[str, Any]:
        """The payload of the next line, which must start with `tag`."""
        raw = await asyncio.wait_for(self.process.stdout.readline(), ANSWER_TIMEOUT)
        word, _, payload = raw.decode().partition(" ")
        if word != tag:
            raise RuntimeError(f"peer: {tag} expected, got {raw[:200]!r}")
        return json.loads(payload)

    def cpu_seconds(self) -> float:
        """CPU the peer used so far."""
        return process_cpu_seconds(self.process.pid)

    async def stop(self) -> None:
        """QUIT, or kill."""
        if self.process.returncode is None:
            self.process.stdin.write(b"QUIT\n")
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class RedisCounters:
    """Commands processed and CPU used by the private Redis."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.calls = 0

    def commands(self) -> int:
        """Commands processed so far, less the INFO calls made to count them."""
        self.calls += 1
        total = int(self.client.info("stats")["total_commands_processed"])
        return total - (self.calls - 1)

    def cpu_seconds(self) -> float:
        """User + system CPU of redis-server so far."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def measure(kind: str, server, options: argparse.Namespace) -> Figures:
    """One layer: join, idle, ping, stream, Redis restart, leave."""
    figures = Figures(kind)
    url = server.url
    counters = RedisCounters(url)
    peer = await PeerProcess.start(kind, url)
    try:
        before = counters.commands()
        joined = await peer.ask(f"JOIN {options.sockets}")
        figures.join_s, figures.join_errors = joined["seconds"], joined["errors"]
        figures.join_commands = counters.commands() - before
        if joined["firstError"]:
            figures.notes.append(f"join: {joined['firstError'][:100]}")
        await idle(peer, counters, options.idle_seconds, figures)
        await ping_and_stream(kind, url, peer, options, figures)
        await restart(kind, server, peer, figures)
        left = await peer.ask("LEAVE")
        figures.leave_s = left["seconds"]
        figures.leave_errors = (
            left["errors"] - joined["errors"] - figures.restart_errors
        )
    finally:
        await peer.stop()
        counters.client.close()
    return figures


async def idle(peer, counters, seconds: float, figures: Figures) -> None:
    """CPU of the peer and of Redis, and Redis commands, over an idle window."""
    await asyncio.sleep(DRAIN_SECONDS)
    commands, cpu, redis_cpu = (
        counters.commands(),
        peer.cpu_seconds(),
        counters.cpu_seconds(),
    )
    await asyncio.sleep(seconds)
    figures.idle_commands_per_s = (counters.commands() - commands) / seconds
    figures.idle_cpu_share = (peer.cpu_seconds() - cpu) / seconds
    figures.idle_redis_cpu_share = (counters.cpu_seconds() - redis_cpu) / seconds


async def ping_and_stream(kind, url, peer, options, figures: Figures) -> None:
    """Round trips through two groups, then a stream of group messages."""
    layer = make_layer(kind, url)
    channel = await layer.new_channel()
    await layer.group_add(PONG_GROUP, channel)
    round_trips = []
    for number in range(options.pings):
        started = time.perf_counter()
        await layer.group_send(user_group(0), {"type": "bench.ping", "reply": 1})
        await asyncio.wait_for(layer.receive(channel), 10)
        round_trips.append((time.perf_counter() - started) * 1000)
        if number == 0:
            round_trips.clear()  # the first one opens connections
    round_trips.sort()
    figures.ping_p50_ms = percentile(round_trips, 0.5)
    figures.ping_p99_ms = percentile(round_trips, 0.99)
    before = (await peer.ask("COUNT"))["received"]
    started = time.perf_counter()
    for _ in range(options.messages):
        await layer.group_send(user_group(1), {"type": "bench.revoke"})
    figures.sent_per_s = options.messages / (time.perf_counter() - started)
    await asyncio.sleep(DRAIN_SECONDS)
    figures.received = (await peer.ask("COUNT"))["received"] - before
    figures.lost = options.messages - figures.received
    await layer.group_discard(PONG_GROUP, channel)


async def restart(kind: str, server, peer: PeerProcess, figures: Figures) -> None:
    """Restart Redis under the idle sockets; do group_sends reach them after?"""
    before = await peer.ask("COUNT")
    await asyncio.to_thread(server.restart)
    await asyncio.sleep(RESTART_PAUSE_SECONDS)
    layer = make_layer(kind, server.url)
    for _ in range(RESTART_SENDS):
        with contextlib.suppress(Exception):  # what revocation does: log, go on
            await layer.group_send(user_group(3), {"type": "bench.revoke"})
        await asyncio.sleep(1)
    after = await peer.ask("COUNT")
    figures.after_restart = after["received"] - before["received"]
    figures.restart_errors = after["errors"] - before["errors"]


def render(rows: list[Figures], options: argparse.Namespace) -> str:
    """The table."""
    header = (
        f"{'layer':<7} {'join s':>7} {'join err':>8} {'join cmds':>9} "
        f"{'idle CPU':>8} {'idle cmd/s':>10} {'redis CPU':>9} "
        f"{'ping p50':>8} {'ping p99':>8} {'sends/s':>8} {'lost':>6} "
        f"{'restart':>7} {'rcv err':>7} {'leave s':>7} {'leave err':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.layer:<7} {row.join_s:>7.2f} {row.join_errors:>8,} "
            f"{row.join_commands:>9,} {row.idle_cpu_share:>8.1%} "
            f"{row.idle_commands_per_s:>10.1f} {row.idle_redis_cpu_share:>9.1%} "
            f"{fmt(row.ping_p50_ms):>8} {fmt(row.ping_p99_ms):>8} "
            f"{row.sent_per_s:>8,.0f} {row.lost:>6,} "
            f"{row.after_restart:>5}/{RESTART_SENDS} {row.restart_errors:>7,} "
            f"{row.leave_s:>7.2f} {row.leave_errors:>9,}"
            + (f"  {'; '.join(row.notes)}" if row.notes else "")
        )
    lines += [
        "",
        f"{options.sockets:,} sockets joining at once (a channel each, a group "
        f"each), idle for {options.idle_seconds:g} s; ping: group_send to a "
        f"socket's group, answered by group_send ({options.pings} round trips, "
        f"ms); then {options.messages:,} group_sends in a row to one socket's "
        "group (sends/s, and how many never arrived). restart: Redis restarted "
        f"under the sockets, then {RESTART_SENDS} group_sends a second apart: "
        "how many arrived; rcv err: receive() errors the sockets saw meanwhile "
        "(each one a consumer crashing: its socket closed 1011).",
    ]
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    """Milliseconds, or '-'."""
    return "-" if value is None else f"{value:.2f}"


async def drive(options: argparse.Namespace) -> list[Figures]:
    """Each layer in turn on a private Redis of its own."""
    rows = []
    for kind in options.layers.split(","):
        with private_redis() as server:
            print(f"measuring {kind} ...", flush=True)
            rows.append(await measure(kind, server, options))
    return rows


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="core,pubsub")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure every layer; print the table."""
    options = parse_arguments(argv)
    rows = asyncio.run(drive(options))
    print()
    print(render(rows, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
