"""One socket's way out: its frames, and how it closes and says why.

Frames go through the socket's byte-bounded outbox (``outbox``), so a client
that stops reading is closed with 4413 instead of growing the server's
memory. A close is queued after the frames already waiting, never in front
of them. The live reader writes here too (``ReaderOutput``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sync.core.conf import sync_settings
from sync.core.exceptions import ServiceUnavailable
from sync.core.frames import error as error_frame
from sync.core.protocol import CloseCode
from sync.ws.frame_text import encode_frame
from sync.ws.outbox import Outbox, Send, transport_backlog

logger = logging.getLogger("sync.ws.consumer")

# Seconds to wait for a client's close answer when the server shuts down.
SHUTDOWN_CLOSE_WAIT = 1.0


class SocketLog:
    """Log lines about one socket: its connection and user ids, never a
    payload or a token."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.connection_id = ""

    def __call__(self, text: str, *, warn: bool = False, **fields: Any) -> None:
        fields.setdefault("user_id", getattr(self.scope.get("user"), "pk", None))
        extra = {"connection_id": self.connection_id, **fields}
        logger.log(logging.WARNING if warn else logging.INFO, text, extra=extra)


class SocketOutput:
    """Frames to one client, bounded in bytes; and the socket's close."""

    def __init__(self, send: Send, scope: dict[str, Any], log: SocketLog) -> None:
        self.outbox = Outbox(
            send, sync_settings.WS_MAX_PENDING_BYTES, transport_backlog(scope)
        )
        self.log = log
        self.closed = False  # closing on purpose: nothing more is queued
        self.close_code: int | None = None  # why it closed, for the log line

    @property
    def ended(self) -> bool:
        """True once nothing more may be written: closing, or the client left."""
        return self.closed or self.outbox.closed

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue one JSON frame; a client too far behind is closed with 4413."""
        self.send_text(encode_frame(frame))

    def send_text(self, text: str, size: int | None = None) -> None:
        """Queue a frame's text (`size` in UTF-8 bytes when known)."""
        if not self.closed and not self.outbox.put_text(text, size):
            self.slow_consumer()

    async def wait_for_room(self, room: int, timeout: float) -> bool:
        """Until at most `room` bytes wait to be written (see Outbox)."""
        return await self.outbox.wait_for_room(room, timeout)

    def close_now(self, code: int) -> None:
        """Queue the close frame after what is queued; never waits."""
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.outbox.close(code)

    def slow_consumer(self) -> None:
        """The client does not read: its outbox is dropped, 4413 sent."""
        self.outbox.give_up_on_slow_client()
        self.closed = True
        self.close_code = CloseCode.SLOW_CONSUMER
        self.log("slow consumer: closing", code=CloseCode.SLOW_CONSUMER, warn=True)

    def lost_messages(self) -> None:
        """Messages this socket should have had are gone: 4409, resync."""
        self.log(
            "messages lost before delivery; asking the client to resync", warn=True
        )
        self.close_now(CloseCode.RESYNC)

    async def unavailable(self, error: ServiceUnavailable) -> None:
        """The store is out of reach: say so, then close 1011 (try again later)."""
        self.log("message store unavailable; closing the socket", warn=True)
        await self.send_frame(error_frame(error.code, error.message, None))
        self.close_now(CloseCode.UNAVAILABLE)

    async def finish(self) -> None:
        """The socket is over: let a close frame already queued go out."""
        if self.closed:
            await self.outbox.drain(SHUTDOWN_CLOSE_WAIT)
        self.outbox.stop()

    async def say_going_away(self, receive, send) -> None:
        """Close with 1001 and wait briefly for the client's answer, which
        the server's shutdown would otherwise cut before it is written."""
        self.closed = True
        self.close_code = CloseCode.GOING_AWAY
        self.outbox.stop()
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": int(CloseCode.GOING_AWAY)})
            async with asyncio.timeout(SHUTDOWN_CLOSE_WAIT):
                while (await receive())["type"] != "websocket.disconnect":
                    pass
