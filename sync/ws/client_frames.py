"""A client's frames once they passed the socket's limits: parse, route, answer.

``ping`` gets ``pong``; ``subscribe`` and ``unsubscribe`` change the socket's
topics; any other type is a message, handled as ``POST /api/sync/send`` and
answered with ``ack``. A bad frame gets an error frame and the socket stays
open. Every answer carries the frame's correlation (docs/protocol.md).
"""

from __future__ import annotations

from typing import Any

from sync.core import frames
from sync.core.exceptions import InvalidJSON, SyncError
from sync.core.jsontext import loads_strict
from sync.core.protocol import FrameType
from sync.core.validation import validate_client_frame, validate_frame
from sync.services.live_reader import LiveReader
from sync.ws.socket_output import SocketLog, SocketOutput
from sync.ws.subscriptions import Subscriptions


class ClientFrames:
    """Answers one authenticated socket's frames."""

    def __init__(
        self,
        user: Any,
        sync: Any,
        reader: LiveReader,
        output: SocketOutput,
        subscriptions: Subscriptions,
        log: SocketLog,
    ) -> None:
        self.user = user
        self.sync = sync
        self.reader = reader
        self.output = output
        self.subscriptions = subscriptions
        self.log = log

    async def take(self, text: str | None) -> None:
        """Handle one frame's text; a bad one gets an error frame."""
        frame = None
        try:
            if text is None:
                raise InvalidJSON("Frames must be JSON text.")
            frame = loads_strict(text)
            await self._handle(validate_frame(frame))
        except SyncError as error:
            self.log("frame refused", code=error.code)
            correlation = frames.correlation_of(frame)
            await self.output.send_frame(
                frames.error(error.code, error.message, correlation)
            )

    async def _handle(self, frame: dict[str, Any]) -> None:
        correlation = frames.correlation_of(frame)
        kind = frame.get("type")
        if kind == FrameType.PING:
            await self.output.send_frame(frames.pong(correlation))
        elif kind in (FrameType.SUBSCRIBE, FrameType.UNSUBSCRIBE):
            await self.subscriptions.change(kind, frame, correlation)
        elif kind != FrameType.PONG:
            await self._accept_message(validate_client_frame(frame), correlation)

    async def _accept_message(self, message, correlation) -> None:
        """Store and deliver, ack, then hand to server-side handlers.

        This socket's own copy is held until the ack is out, so the sender
        learns the message id before it sees the echo.
        """
        self.sync.handler_runs.check_room(message.type, self.user.pk)
        async with self.reader.holding():
            sent = await self.sync.asend_from_client(self.user, message)
            await self.output.send_frame(frames.ack(sent, correlation))
        self.sync.handler_runs.submit(sent, self.user)
