"""Physical-limit baseline: a bare ``websockets`` broadcast server.

    python -m bench.peers.ws_broadcast PORT

Clients connect to any path but ``/ctl`` and get a ``ready`` frame once
registered. Each text frame received on ``/ctl`` is relayed to every client
with ``websockets.broadcast()`` (encoded once, no await per socket), then
acknowledged with ``ok``. One asyncio process.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(connection: ServerConnection) -> None:
    """Relay /ctl frames to every client; register everyone else."""
    if connection.request.path == "/ctl":
        async for frame in connection:
            broadcast(CLIENTS, frame)
            await connection.send("ok")
        return
    CLIENTS.add(connection)
    try:
        await connection.send("ready")
        await connection.wait_closed()
    finally:
        CLIENTS.discard(connection)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:`port` until killed."""
    async with serve(
        handler,
        "127.0.0.1",
        port,
        ping_interval=None,
        compression=None,
        max_queue=None,
        backlog=1024,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
