"""One side of the channel-layer measurement: the sockets of another process.

    python -m bench.layer_peer --layer core|pubsub --url REDIS_URL

Holds a layer configured as config/settings.py would, and obeys the lines
of ``bench.channel_layers`` on stdin: ``JOIN n`` (n sockets join at once: a
channel each, each in its own user's group, each awaiting ``receive`` as a
consumer does; a message asking for a reply is answered through a group the
driver listens on), ``COUNT``, ``LEAVE`` (every socket leaves its group),
``QUIT``. Each answer line gives the seconds it took, the messages received
so far and the errors met so far.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from typing import Any

PREFIX = "bench:asgi"
PONG_GROUP = "bench.pong"
LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
# Each layer's host options as the project sets (or set) them in
# config/settings.py: the core layer needs a read timeout above its 5 s
# BZPOPMIN; pub/sub reads never block on a command.
HOST_OPTIONS = {
    "core": {"socket_timeout": 15, "socket_connect_timeout": 2},
    "pubsub": {"socket_timeout": 2, "socket_connect_timeout": 2},
}


def make_layer(kind: str, url: str):
    """A layer of `kind` configured as config/settings.py would."""
    module, _, name = LAYERS[kind].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(hosts=[{"address": url, **HOST_OPTIONS[kind]}], prefix=PREFIX)


def user_group(number: int) -> str:
    """The group of user `number` (as sync.services.groups names them)."""
    return f"sync.user.{number}"


class Peer:
    """Channels in groups, each awaiting receive; answers pings."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.channels: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.received = 0
        self.last_us = 0
        self.errors: list[str] = []

    async def join(self, count: int) -> None:
        """`count` sockets connect at once: a channel each, then its group."""
        await self._all(self._join_one(number) for number in range(count))

    async def _all(self, calls) -> None:
        """Run `calls` at once; count the ones that failed."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        self.errors += [repr(error) for error in results if error is not None]

    async def _join_one(self, number: int) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(user_group(number), channel)
        self.channels.append(channel)
        self.tasks.append(asyncio.create_task(self._listen(number, channel)))

    async def _listen(self, number: int, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # counted: a consumer would crash
                self.errors.append(repr(error))
                await asyncio.sleep(1)
                continue
            self.received += 1
            self.last_us = time.time_ns() // 1000
            if message.get("reply"):
                await self.layer.group_send(PONG_GROUP, message)

    async def leave(self) -> None:
        """Every socket leaves its group and stops receiving."""
        await self._all(
            self.layer.group_discard(user_group(number), channel)
            for number, channel in enumerate(self.channels)
        )
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def say(tag: str, payload: dict[str, Any] | None = None) -> None:
    """One line to the driver."""
    sys.stdout.write(f"{tag} {json.dumps(payload or {})}\n")
    sys.stdout.flush()


async def peer_main(kind: str, url: str) -> None:
    """Obey the driver's lines: JOIN n, COUNT, LEAVE, QUIT."""
    peer = Peer(make_layer(kind, url))
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    say("READY")
    while words := (await reader.readline()).decode().split():
        started = time.perf_counter()
        if words[0] == "JOIN":
            await peer.join(int(words[1]))
        elif words[0] == "LEAVE":
            await peer.leave()
        elif words[0] != "COUNT":
            break
        say(
            words[0],
            {
                "seconds": time.perf_counter() - started,
                "received": peer.received,
                "lastUs": peer.last_us,
                "errors": len(peer.errors),
                "firstError": peer.errors[0] if peer.errors else None,
            },
        )


def main() -> None:
    """One peer process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=LAYERS, required=True)
    parser.add_argument("--url", required=True)
    options = parser.parse_args()
    asyncio.run(peer_main(options.layer, options.url))


if __name__ == "__main__":
    main()
