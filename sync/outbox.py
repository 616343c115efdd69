"""Frames waiting for one WebSocket, bounded in bytes (SPEC §5, close 4413).

Whoever delivers to a socket only appends to its outbox and never waits on
the network, so a client that stops reading cannot stall the sender or other
sockets. One writer task hands the frames to the ASGI server in order.

Bound: ``SYNC_WS_MAX_PENDING_BYTES`` counts frames still in the outbox plus,
where the ASGI server tells us (daphne, via ``sync.daphne_compat``), bytes
written but not yet taken by the client's TCP window. When a new frame would
pass it, the outbox is dropped and the socket closed with 4413: the client
reconnects and resumes by cursor, so nothing stored is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_SLOW_CONSUMER = 4413


def transport_backlog(scope: dict[str, Any]) -> Callable[[], int]:
    """The ASGI server's count of unsent bytes for this socket, if it has one."""
    extension = scope.get("extensions", {}).get("sync.transport_backlog")
    return extension if callable(extension) else (lambda: 0)


class Outbox:
    """Ordered, byte-bounded output of one socket, written by one task."""

    def __init__(
        self, send: Send, limit: int, backlog: Callable[[], int] = lambda: 0
    ) -> None:
        self._send = send
        self._limit = limit
        self._backlog = backlog
        self._frames: deque[dict[str, Any]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._writer = asyncio.create_task(self._write_forever())
        self.closed = False
        self.overflowed = False

    def put_text(self, text: str) -> bool:
        """Queue a text frame; False (and a 4413 close) when over the bound."""
        if self.closed:
            return False
        size = len(text)  # our JSON is ASCII-only: characters are bytes
        if self._bytes + size + self._backlog() > self._limit:
            self.overflowed = True
            self._abandon(CLOSE_SLOW_CONSUMER)
            return False
        self._bytes += size
        self._push({"type": "websocket.send", "text": text})
        return True

    def close(self, code: int) -> None:
        """Send the close frame after every frame already queued."""
        if not self.closed:
            self.closed = True
            self._push({"type": "websocket.close", "code": code})

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the writer has sent everything."""
        await asyncio.wait({self._writer}, timeout=timeout)

    def stop(self) -> None:
        """Stop writing at once (the socket is gone)."""
        self.closed = True
        self._frames.clear()
        self._writer.cancel()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued here and not yet handed to the ASGI server."""
        return self._bytes

    def _abandon(self, code: int) -> None:
        # The client is not reading: what is queued would never get through
        # in time, so drop it and put the close frame first.
        self._frames.clear()
        self._bytes = 0
        self.closed = True
        self._push({"type": "websocket.close", "code": code})

    def _push(self, message: dict[str, Any]) -> None:
        self._frames.append(message)
        self._ready.set()

    async def _write_forever(self) -> None:
        while True:
            if not self._frames:
                self._ready.clear()
                await self._ready.wait()
                continue
            message = self._frames.popleft()
            if message["type"] == "websocket.send":
                self._bytes -= len(message["text"])
            try:
                await self._send(message)
            except Exception as error:
                # A frame racing the client's close: nothing more to write.
                logger.debug("websocket send failed: %s", type(error).__name__)
                self.closed = True
                self._frames.clear()
                return
            if message["type"] == "websocket.close":
                return
