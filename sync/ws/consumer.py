"""The WebSocket endpoint ``/ws`` (docs/protocol.md, WebSocket).

One consumer per socket; it owns the socket's life: authenticate and open
it, count its frames against the limits, forget it however it ends. The
rest is in pieces of its own: what it delivers, and when, is its live
reader's (``sync.services.live_reader``: every stored message it may see,
exactly once and in order); its output and close codes are in
``socket_output``; its client frames are answered by ``client_frames``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from sync.core import frames
from sync.core.conf import sync_settings
from sync.core.exceptions import ServiceUnavailable, SyncError
from sync.core.protocol import CloseCode, ErrorCode
from sync.core.topic_access import aauthorize_topics
from sync.services import get_realtime_sync, lifecycle
from sync.services.hub import EncodedMessage
from sync.services.live_reader import LiveReader
from sync.services.ratelimit import LocalWindowCounter
from sync.services.streams import ReaderStream
from sync.ws.client_frames import ClientFrames
from sync.ws.connect_params import ConnectParams
from sync.ws.frame_limits import FrameVerdict, frame_too_big, judge_frame
from sync.ws.frame_text import encode_frame, parse_leniently
from sync.ws.heartbeats import heartbeats
from sync.ws.socket_output import SocketLog, SocketOutput
from sync.ws.subscriptions import Subscriptions


class RealtimeConsumer(AsyncWebsocketConsumer):
    """Delivers a user's messages and broadcasts; accepts their frames."""

    reader: LiveReader | None = None
    output: SocketOutput | None = None
    accepted = False
    registered = False
    # No channel-layer channel per socket: messages and revocations reach
    # this process's sockets through its hub (sync.services.hub).
    channel_layer_alias = None

    # Connection lifecycle ---------------------------------------------------

    async def connect(self) -> None:
        """Authenticate, check the limits, replay, start the heartbeat."""
        await self.accept()
        self.log = SocketLog(self.scope)
        self.output = SocketOutput(self.base_send, self.scope, self.log)
        self.log.connection_id = uuid.uuid4().hex
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self._refuse(CloseCode.UNAUTHENTICATED, "not_authenticated", None)
            return
        try:
            params = ConnectParams.of(self.scope)
            await aauthorize_topics(user, params.topics)
        except SyncError as error:
            await self.output.send_frame(frames.error(error.code, error.message, None))
            forbidden = error.code == ErrorCode.FORBIDDEN_TOPIC
            code = CloseCode.FORBIDDEN_TOPIC if forbidden else CloseCode.BAD_REQUEST
            self._refuse(code, error.code, user.pk)
            return
        self.sync = get_realtime_sync()
        limit = sync_settings.WS_MAX_CONNECTIONS_PER_USER
        if not self.sync.connections.try_open(self.connection_id, str(user.pk), limit):
            self._refuse(CloseCode.THROTTLED, "too_many_connections", user.pk)
            self.log.connection_id = ""
            return
        self.registered = True
        try:
            await self._open(user, params)
        except ServiceUnavailable as error:
            await self.output.unavailable(error)

    async def _open(self, user, params: ConnectParams) -> None:
        self.user = user
        self.auth_token = self.scope.get("auth_token")
        self.credentials = (user.pk, self.auth_token)
        self.frame_counter = LocalWindowCounter(sync_settings.ws_rate_limit)
        self.last_seen = asyncio.get_running_loop().time()
        stream = ReaderStream(self.sync.store, str(user.pk), params.topics)
        self.reader = LiveReader(stream, self.output)
        subscriptions = Subscriptions(
            user, self.sync, self.connection_id, self.reader, self.output
        )
        self.frames = ClientFrames(
            user, self.sync, self.reader, self.output, subscriptions, self.log
        )
        self.sync.connections.subscribed(self.connection_id, len(params.topics))
        # Registered before the replay is read, holding what arrives meanwhile,
        # so nothing published during the replay falls between the two.
        self.sync.hub.add(self, str(user.pk))
        if lifecycle.shutting_down():  # registered after the hub's 1001 to all
            self.close_now(CloseCode.GOING_AWAY)
        self.sync.report_connections_from_now()
        head, first = await self.reader.replay(params.cursor)
        await self.output.send_frame(
            frames.established(
                self.connection_id,
                str(user.pk),
                sync_settings.HEARTBEAT_INTERVAL,
                head.encode(),
                None if first is None else not first.gap,
            )
        )
        await self.reader.finish_replay(first)
        heartbeats().add(self)
        self.log("websocket connected")

    def _refuse(self, code: int, reason: str, user_id: Any) -> None:
        """Close a socket that may not open, saying why in the log."""
        self.log("websocket refused", user_id=user_id, code=code, reason=reason)
        self.close_now(code)

    async def __call__(self, scope, receive, send):
        # daphne cancels every application on SIGTERM: say goodbye with 1001
        # so clients reconnect elsewhere and resume by cursor.
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if self.accepted and self.output is not None and not self.output.closed:
                await self.output.say_going_away(receive, send)
            raise
        finally:
            await self._cleanup()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its per-event database housekeeping:
        nothing here touches the database on the event loop (what does runs
        through ``database_sync_to_async``, which does it itself)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def accept(self, subprotocol=None, headers=None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def disconnect(self, code: int) -> None:
        """The client went away (closed, or the TCP connection dropped)."""
        if self.output is not None and self.output.close_code is None:
            self.output.close_code = code
        await self._cleanup()

    async def close(self, code=None, reason=None) -> None:
        """Close after every frame already queued for the client."""
        if self.output is None:
            await super().close(code=None if code is None else int(code), reason=reason)
        else:
            self.close_now(CloseCode.NORMAL if code is None else code)

    async def _cleanup(self) -> None:
        """Forget the socket exactly once, however it ended."""
        if self.output is not None:
            await self.output.finish()
        if not self.registered:
            return
        self.registered = False
        heartbeats().remove(self)
        self.sync.connections.closed(self.connection_id)
        if self.reader is not None:
            self.sync.hub.remove(self, str(self.user.pk))
            self.reader.stop()
        self.log("websocket closed", code=self.output.close_code)

    # From the hub and the heartbeat -----------------------------------------

    @property
    def connection_id(self) -> str:
        """This socket's id in logs, status figures and the established frame."""
        log = getattr(self, "log", None)
        return "" if log is None else log.connection_id

    def on_message(self, message: EncodedMessage) -> bool:
        """A stored message this socket may see; True if it was sent now."""
        return self.reader is not None and self.reader.on_message(message)

    def close_now(self, code: int) -> None:
        """Queue the close frame after what is queued; never waits."""
        if self.output is not None:
            self.output.close_now(code)

    def revoke(self, token_key: str | None) -> None:
        """The user lost access, or the token that opened this socket is gone."""
        if self.reader is None or self.output.closed:
            return
        if token_key is None or token_key == self.auth_token:
            self.log("websocket access revoked")
            self.close_now(CloseCode.UNAUTHENTICATED)

    def send_ping(self) -> None:
        """The server's heartbeat frame."""
        self.output.send_text(encode_frame(frames.ping()))

    async def catch_up_if_behind(self) -> None:
        """Deliver what the store holds that the live path lost."""
        if self.reader is not None:
            await self.reader.catch_up_if_behind()

    # Frames from the client --------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Any frame proves the client alive; then size, rate, then content."""
        if self.reader is None or self.output.closed:
            return
        self.last_seen = asyncio.get_running_loop().time()
        if frame_too_big(text_data if text_data is not None else bytes_data):
            self.close_now(CloseCode.TOO_BIG)
            return
        verdict = judge_frame(self.frame_counter.hit(), self.user.pk)
        if verdict is FrameVerdict.ACCEPT:
            await self.frames.take(text_data)
        elif verdict is FrameVerdict.CLOSE:
            self.close_now(CloseCode.THROTTLED)
        else:
            if verdict is FrameVerdict.DROP_FIRST:  # a flood is not a log flood
                self.log("frame refused", code=ErrorCode.THROTTLED)
            correlation = frames.correlation_of(parse_leniently(text_data))
            message = "Too many frames; this one was dropped."
            error = frames.error(ErrorCode.THROTTLED, message, correlation)
            await self.output.send_frame(error)
