"""The WebSocket endpoint ``/ws`` (SPEC §5).

One consumer per socket. It registers with this process's delivery hub,
which hands it every stored message it may see, encoded once; it delivers
each exactly once and in order: a live message that skips ahead of the last
queue sequence delivered triggers a store read first (see
``sync.services.streams``). It also joins its user's channel-layer group,
which carries revocations.

Output goes through a byte-bounded outbox (``sync.ws.outbox``), so a client
that stops reading is closed with 4413 instead of growing the server's
memory. Server-side handlers run after the ack, off the receive path.

Close codes: 4400 bad connection parameters, 4401 not authenticated or
revoked, 4403 forbidden topic on the connect URL, 4408 silent for two
heartbeats, 4409 messages were lost (reconnect with your cursor), 4413 slow
consumer, 4429 too many frames or open sockets, 1009 frame too large, 1011
the message store is out of reach (after an error frame), 1001 server
shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from sync.core import frames, metrics
from sync.core.conf import MAX_TOPICS, sync_settings
from sync.core.exceptions import (
    InvalidJSON,
    InvalidTopics,
    ServiceUnavailable,
    StoreUnavailable,
    SyncError,
)
from sync.core.topic_access import aauthorize_topics
from sync.core.validation import (
    parse_topic_list,
    validate_client_frame,
    validate_frame,
    validate_subscription,
)
from sync.http.parsers import loads_strict, max_body_bytes
from sync.services import get_realtime_sync, lifecycle
from sync.services.groups import cross_process_layer, user_group
from sync.services.handlers import HandlerQueue
from sync.services.hub import EncodedMessage
from sync.services.ratelimit import LocalWindowCounter
from sync.services.streams import ReaderStream, Verdict
from sync.store.cursors import decode_cursor
from sync.store.paging import ReadResult
from sync.store.redis import REDIS_DOWN
from sync.ws.frame_limits import FrameVerdict, judge_frame
from sync.ws.heartbeats import heartbeats
from sync.ws.middleware import query_param
from sync.ws.outbox import CLOSE_SLOW_CONSUMER, Outbox, transport_backlog

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_TOPIC = 4403
CLOSE_SILENT = 4408
CLOSE_RESYNC = 4409
CLOSE_THROTTLED = 4429
CLOSE_TOO_BIG = 1009
CLOSE_UNAVAILABLE = 1011
CLOSE_GOING_AWAY = 1001
# Seconds to wait for a client's close answer when the server shuts down.
SHUTDOWN_CLOSE_WAIT = 1.0
# Pause between attempts to read the channel layer while Redis is out of
# reach (one socket at a time tries: channels-redis serialises its reads).
LAYER_RETRY_SECONDS = 1.0
# A closing socket first gives its cancelled layer read this long to clean up
# (the pub/sub layer unsubscribes the channel, behind one lock per process:
# cut short, the subscription would stay for good), then cancels it again
# this often, at most this many times, until it stops (see _cancel_firmly).
LAYER_CANCEL_GRACE_SECONDS = 2.0
LAYER_CANCEL_RETRY_SECONDS = 0.1
LAYER_CANCEL_ATTEMPTS = 50
# Live messages held while the store is read; past it they are let go and the
# store is read again afterwards, since it holds them too.
MAX_HELD_MESSAGES = 1000


class RealtimeConsumer(AsyncJsonWebsocketConsumer):
    """Delivers a user's messages and broadcasts; accepts their frames."""

    connection_id = ""
    stream: ReaderStream | None = None
    channel_layer_alias = None  # set per socket in __call__
    channel_name: str | None = None  # set by Channels once the layer made it
    outbox: Outbox | None = None
    accepted = False
    closed = False
    registered = False
    filling = False  # a store read is under way: live messages wait in `held`
    close_code: int | None = None  # why it closed, for the log line

    # Connection lifecycle ---------------------------------------------------

    async def connect(self) -> None:
        """Authenticate, check limits, join groups, replay, start heartbeats."""
        await self.accept()
        self.outbox = Outbox(
            self.base_send,
            sync_settings.WS_MAX_PENDING_BYTES,
            transport_backlog(self.scope),
        )
        self.connection_id = uuid.uuid4().hex
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not_authenticated", None)
            return
        try:
            cursor_text = query_param(self.scope, "cursor")
            cursor = decode_cursor(cursor_text) if cursor_text else None
            topics = parse_topic_list(query_param(self.scope, "topics"))
            await aauthorize_topics(user, topics)
        except SyncError as error:
            await self.send_frame(frames.error(error.code, error.message, None))
            forbidden = error.code == "forbidden_topic"
            code = CLOSE_FORBIDDEN_TOPIC if forbidden else CLOSE_BAD_REQUEST
            await self._refuse(code, error.code, user.pk)
            return
        self.sync = get_realtime_sync()
        if not self.sync.connections.try_open(
            self.connection_id,
            str(user.pk),
            sync_settings.WS_MAX_CONNECTIONS_PER_USER,
        ):
            await self._refuse(CLOSE_THROTTLED, "too_many_connections", user.pk)
            self.connection_id = ""
            return
        self.registered = True
        try:
            await self._open(user, cursor, topics)
        except ServiceUnavailable as error:
            await self._unavailable(error)

    async def _refuse(self, code: int, reason: str, user_id: Any) -> None:
        """Close a socket that may not open, saying why in the log."""
        logger.info(
            "websocket refused",
            extra={
                "connection_id": self.connection_id,
                "user_id": user_id,
                "code": code,
                "reason": reason,
            },
        )
        await self.close(code=code)

    async def _unavailable(self, error: ServiceUnavailable) -> None:
        """The store is out of reach: say so, then close 1011 (try again later)."""
        logger.warning(
            "message store unavailable; closing the socket",
            extra={"connection_id": self.connection_id, "user_id": self._user_id()},
        )
        await self.send_frame(frames.error(error.code, error.message, None))
        await self.close(code=CLOSE_UNAVAILABLE)

    async def _open(self, user, cursor, topics) -> None:
        self.user = user
        self.auth_token = self.scope.get("auth_token")
        self.stream = ReaderStream(self.sync.store, str(user.pk), topics)
        self.frame_counter = LocalWindowCounter(sync_settings.ws_rate_limit)
        self.handler_queue = HandlerQueue()
        self.last_seen = asyncio.get_running_loop().time()
        self.credentials = (user.pk, self.auth_token)
        self.held: list[EncodedMessage] = []
        self.read_again = False  # the fill under way must read the store once more
        self.fill_task: asyncio.Task | None = None
        await self._join([user_group(user.pk)])
        self.sync.connections.subscribed(self.connection_id, len(topics))
        # Registered before the replay is read, holding what arrives meanwhile,
        # so nothing published during the replay falls between the two.
        self.filling = True
        self.sync.hub.add(self, str(user.pk))
        if lifecycle.shutting_down():  # registered after the hub's 1001 to all
            self.close_now(CLOSE_GOING_AWAY)
        self.sync.report_connections_from_now()
        head = await self.stream.start(cursor)
        await self._replay(head, resumed=cursor is not None)
        await self._settle(read_first=False)
        heartbeats().add(self)
        logger.info(
            "websocket connected",
            extra={"connection_id": self.connection_id, "user_id": user.pk},
        )

    async def _replay(self, head, resumed: bool) -> None:
        """Send connection.established, then every message missed since `cursor`.

        The first page says whether the history still reaches back; the
        rest follow page by page (see _send_pages).
        """
        first = await self.stream.read_page(_page_bytes()) if resumed else None
        recovered = None if first is None else not first.gap
        await self.send_frame(
            frames.established(
                self.connection_id,
                str(self.user.pk),
                sync_settings.HEARTBEAT_INTERVAL,
                head.encode(),
                recovered,
            )
        )
        if first is not None and await self._send_pages(first):
            self._lost_messages()

    async def _send_pages(self, page: ReadResult) -> bool:
        """Send `page` and the pages after it; True if a later one had a gap.

        Each page is read only once the client has taken most of the one
        before, so a replay of any length holds at most two pages in memory,
        and it stops as soon as the socket closes (or its client stops
        reading: 4413), instead of encoding what nobody will read.
        """
        lost = False
        page_bytes = _page_bytes()
        while True:
            for entry, after in page.picked:
                text = entry.text_for(after.encode()).decode()
                self._send_text(text, entry.text_size)
            metrics.count(metrics.DELIVERED_WEBSOCKET, page.count)
            if not page.has_more or self.closed:
                return lost
            if not await self.outbox.wait_for_room(page_bytes, _replay_patience()):
                self._slow_consumer()
                return lost
            page = await self.stream.read_page(page_bytes)
            lost = lost or page.gap

    async def disconnect(self, code: int) -> None:
        """The client went away (closed, or the TCP connection dropped)."""
        if self.close_code is None:
            self.close_code = code
        await self._cleanup()

    async def __call__(self, scope, receive, send):
        # Only a layer shared by several processes is worth a channel per
        # socket (it carries revocations from elsewhere); this process's
        # sockets are reached through the hub.
        self.channel_layer_alias = (
            DEFAULT_CHANNEL_LAYER if cross_process_layer() is not None else None
        )
        # daphne cancels every application on SIGTERM: say goodbye with 1001
        # so clients reconnect elsewhere and resume by cursor.
        try:
            await self._consume(scope, receive, send)
        except asyncio.CancelledError:
            if self.accepted and not self.closed:
                await self._say_going_away(receive, send)
            raise
        finally:
            await self._cleanup()

    async def _consume(self, scope, receive, send) -> None:
        """Channels' consumer loop, with or without the layer's Redis.

        The pub/sub layer subscribes a channel for the socket before the
        handshake is even read; with its Redis out of reach that would end
        in an HTTP 500. The socket then goes on without a channel: connect
        meets the store's outage itself (error frame, then 1011), and if only
        the layer were down, heartbeats still re-check revocations.
        """
        try:
            await super().__call__(scope, receive, send)
        except REDIS_DOWN:
            if self.channel_layer is None or self.channel_name is not None:
                raise  # not the channel's creation: handled where it happened
            logger.warning("channel layer unavailable; socket served without it")
            self.channel_layer_alias = None
            await super().__call__(scope, receive, send)

    async def _say_going_away(self, receive, send) -> None:
        """Close with 1001 and wait briefly for the client's answer.

        Without the wait the server's shutdown drops the connection before
        the close frame is written, and the client sees an abrupt end.
        """
        self.closed = True
        self.close_code = CLOSE_GOING_AWAY
        if self.outbox is not None:
            self.outbox.stop()
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": CLOSE_GOING_AWAY})
            async with asyncio.timeout(SHUTDOWN_CLOSE_WAIT):
                while (await receive())["type"] != "websocket.disconnect":
                    pass

    @property
    def channel_receive(self):
        """The layer's receive as Channels runs it, outliving a Redis outage."""
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive) -> None:
        self._layer_receive = receive  # set by Channels' __call__

    async def _receive_from_layer(self) -> dict[str, Any]:
        """The next layer event; while Redis is out of reach, wait and retry.

        Only revocations come this way, and heartbeats re-check those, so a
        socket lives through an outage instead of dying with the layer's
        error (no close frame), and delivers again once Redis is back.
        """
        while True:
            try:
                return await _cancel_firmly(
                    asyncio.ensure_future(self._layer_receive())
                )
            except REDIS_DOWN:
                # Cancelled (the socket is closing) while redis-py was reading:
                # its error may stand for the cancellation, so never retry then.
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError() from None
                await asyncio.sleep(LAYER_RETRY_SECONDS)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its per-event database housekeeping.

        Channels runs ``aclose_old_connections`` through the one sync thread
        before every event, a thread hop per frame. Nothing here touches the
        database on the event loop: what does (token lookup, handlers, the
        heartbeat's re-check) runs through ``database_sync_to_async``, which
        does that housekeeping itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def accept(self, subprotocol=None, headers=None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    def close_now(self, code: int) -> None:
        """Queue the close frame without waiting (the hub, on shutdown)."""
        if not self.closed and self.outbox is not None:
            self.closed = True
            self.close_code = code
            self.outbox.close(code)

    async def close(self, code=None, reason=None) -> None:
        """Close after every frame already queued for the client."""
        if self.closed:
            return
        self.closed = True
        self.close_code = 1000 if code is None else code
        if self.outbox is None:
            await super().close(code=code, reason=reason)
        else:
            self.outbox.close(1000 if code is None else code)

    async def _cleanup(self) -> None:
        """Forget the socket exactly once, however it ended."""
        if self.outbox is not None and self.closed:
            # Let a close frame already queued go out; drop anything else.
            await self.outbox.drain(SHUTDOWN_CLOSE_WAIT)
        if self.outbox is not None:
            self.outbox.stop()
        if not self.registered:
            return
        self.registered = False
        connection_id = self.connection_id
        heartbeats().remove(self)
        handler_queue = getattr(self, "handler_queue", None)
        if handler_queue is not None:
            handler_queue.stop()
        self.sync.connections.closed(connection_id)
        await self._leave_groups()
        logger.info(
            "websocket closed",
            extra={
                "connection_id": connection_id,
                "user_id": self.user.pk,
                "code": self.close_code,
            },
        )

    async def _leave_groups(self) -> None:
        if self.stream is None:
            return
        self.sync.hub.remove(self, str(self.user.pk))
        if self.fill_task is not None:
            self.fill_task.cancel()
        if self.channel_layer is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(
                    user_group(self.user.pk), self.channel_name
                )

    # Messages from the delivery hub ------------------------------------------

    def on_message(self, message: EncodedMessage) -> bool:
        """A stored message this socket may see; runs on the loop, never waits.

        True when it was sent now (the hub counts those for the metrics).
        """
        if self.stream is None or self.closed:
            return False
        if self.filling:
            self._hold(message)
            return False
        verdict = self._take(message)
        if verdict is Verdict.GAP:
            self.filling = True
            self.fill_task = asyncio.create_task(self._settle())
        return verdict is Verdict.DELIVER

    def _take(self, message: EncodedMessage) -> Verdict:
        entry = message.entry
        verdict = self.stream.judge(entry.queue, entry.seq, entry.topics)
        if verdict is Verdict.DELIVER:
            cursor = self.stream.advance(entry.queue, entry.seq)
            self._send_text(message.text_for(cursor), message.size)
        return verdict

    def _hold(self, message: EncodedMessage) -> None:
        if len(self.held) < MAX_HELD_MESSAGES:
            self.held.append(message)
        else:
            self.read_again = True  # the next store read brings them

    async def _settle(self, read_first: bool = True) -> None:
        """Read the store, then take the messages held meanwhile; until in step.

        Runs with `filling` set, so live messages wait in `held` instead of
        overtaking what the store read returns.
        """
        try:
            must_read = read_first
            while not self.closed:
                if must_read:
                    try:
                        await self._fill_from_store()
                    except ServiceUnavailable as error:
                        await self._unavailable(error)
                        return
                held, self.held = self.held, []
                must_read, self.read_again = self.read_again, False
                sent = 0
                for message in held:
                    if self.closed:
                        break
                    verdict = self._take(message)
                    sent += verdict is Verdict.DELIVER
                    must_read = must_read or verdict is Verdict.GAP
                metrics.count(metrics.DELIVERED_WEBSOCKET, sent)
                if not must_read or self.closed:
                    return
        finally:
            self.filling = False

    async def _catch_up(self) -> None:
        """Settle what the store holds beyond this reader's position, now."""
        while self.fill_task is not None and not self.fill_task.done():
            await asyncio.wait({self.fill_task})
        self.filling = True
        await self._settle()

    async def _fill_from_store(self) -> None:
        """Deliver what the live path missed; 4409 if the store lost it too."""
        page = await self.stream.read_page(_page_bytes())
        if await self._send_pages(page) or page.gap:
            self._lost_messages()

    def _lost_messages(self) -> None:
        """Messages this socket should have had are gone: 4409, resync."""
        logger.warning(
            "messages lost before delivery; asking the client to resync",
            extra={"connection_id": self.connection_id, "user_id": self._user_id()},
        )
        self.close_now(CLOSE_RESYNC)

    async def sync_revoke(self, event: dict[str, Any]) -> None:
        """A revocation from another process, through the shared layer."""
        self.revoke(event.get("token"))

    def revoke(self, token_key: str | None) -> None:
        """The user lost access, or the token that opened this socket is gone."""
        if self.stream is None or self.closed:
            return
        if token_key is None or token_key == self.auth_token:
            logger.info(
                "websocket access revoked",
                extra={"connection_id": self.connection_id, "user_id": self.user.pk},
            )
            self.close_now(CLOSE_UNAUTHENTICATED)

    # Frames from the client --------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Any frame proves the client alive; then size, rate, then content."""
        if self.stream is None or self.closed:
            return
        self.last_seen = asyncio.get_running_loop().time()
        if _frame_too_big(text_data if text_data is not None else bytes_data):
            await self.close(code=CLOSE_TOO_BIG)
            return
        verdict = judge_frame(self.frame_counter.hit(), self.user.pk)
        if verdict is FrameVerdict.CLOSE:
            await self.close(code=CLOSE_THROTTLED)
            return
        if verdict is not FrameVerdict.ACCEPT:
            if verdict is FrameVerdict.DROP_FIRST:  # a flood is not a log flood
                self._log_refused("throttled")
            correlation = frames.correlation_of(_parse_leniently(text_data))
            await self.send_frame(
                frames.error(
                    "throttled", "Too many frames; this one was dropped.", correlation
                )
            )
            return
        frame = None
        try:
            if text_data is None:
                raise InvalidJSON("Frames must be JSON text.")
            frame = loads_strict(text_data)
            await self._handle_frame(validate_frame(frame))
        except SyncError as error:
            self._log_refused(error.code)
            correlation = frames.correlation_of(frame)
            await self.send_frame(frames.error(error.code, error.message, correlation))

    def _log_refused(self, code: str) -> None:
        logger.info(
            "frame refused",
            extra={
                "connection_id": self.connection_id,
                "user_id": self._user_id(),
                "code": code,
            },
        )

    async def _handle_frame(self, frame: dict[str, Any]) -> None:
        correlation = frames.correlation_of(frame)
        kind = frame.get("type")
        if kind == "ping":
            await self.send_frame(frames.pong(correlation))
        elif kind == "pong":
            return
        elif kind == "subscribe":
            await self._subscribe(validate_subscription(frame), correlation)
        elif kind == "unsubscribe":
            await self._unsubscribe(validate_subscription(frame), correlation)
        else:
            await self._accept_message(validate_client_frame(frame), correlation)

    async def _accept_message(self, message, correlation) -> None:
        """Store and deliver, ack, then hand to server-side handlers.

        This socket's own copy of the message is held until the ack is out,
        so the sender learns the message id before it sees the echo.
        """
        self.handler_queue.check_room(message.type)
        already_filling, self.filling = self.filling, True
        try:
            sent = await self.sync.asend_from_client(self.user, message)
            await self.send_frame(frames.ack(sent, correlation))
        finally:
            if not already_filling:
                await self._settle(read_first=False)
        self.handler_queue.submit(sent, self.user)

    async def _subscribe(self, topics, correlation) -> None:
        new = [topic for topic in topics if topic not in self.stream.topics]
        if len(self.stream.topics) + len(new) > MAX_TOPICS:
            raise InvalidTopics(
                f"At most {MAX_TOPICS} topics per connection.",
                details={"max": MAX_TOPICS},
            )
        await aauthorize_topics(self.user, new)
        # Settle what the current topics still owe first, so the new topics
        # start from now and bring none of their older broadcasts. Nothing
        # runs between the settle and the subscribe: no await separates them.
        await self._catch_up()
        if self.closed:  # the store had lost messages: 4409 is on its way
            return
        self.stream.subscribe(new)
        await self._topics_changed("subscribed", correlation)

    async def _unsubscribe(self, topics, correlation) -> None:
        gone = [topic for topic in topics if topic in self.stream.topics]
        self.stream.unsubscribe(gone)
        await self._topics_changed("unsubscribed", correlation)

    async def _topics_changed(self, kind: str, correlation) -> None:
        topics = sorted(self.stream.topics)
        self.sync.connections.subscribed(self.connection_id, len(topics))
        await self.send_frame(frames.topics_changed(kind, topics, correlation))

    # Heartbeat (driven by sync.ws.heartbeats) ------------------------------------

    def send_ping(self) -> None:
        """The server's heartbeat frame."""
        self._send_text(encode_frame(frames.ping()))

    async def catch_up_if_behind(self) -> None:
        """Deliver a message whose live copy was the last one and got lost."""
        if self.closed:
            return
        if self.filling:
            # The read under way may predate what was lost: one more after it.
            self.read_again = True
        elif await self.stream.is_behind():
            await self._catch_up()

    # Helpers -------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue one JSON frame; a client too far behind is closed with 4413."""
        self._send_text(encode_frame(frame))

    def _send_text(self, text: str, size: int | None = None) -> None:
        if self.closed or self.outbox is None:
            return
        if not self.outbox.put_text(text, size):
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        """The client does not read: its outbox is dropped, 4413 sent."""
        if self.outbox is not None:
            self.outbox.give_up_on_slow_client()
        self.closed = True
        self.close_code = CLOSE_SLOW_CONSUMER
        logger.warning(
            "slow consumer: closing",
            extra={
                "connection_id": self.connection_id,
                "user_id": self._user_id(),
                "code": CLOSE_SLOW_CONSUMER,
            },
        )

    def _user_id(self) -> Any:
        """The socket's user id for log lines (None before authentication)."""
        return getattr(self.scope.get("user"), "pk", None)

    async def _join(self, groups: list[str]) -> None:
        if self.channel_layer is None:
            return
        for group in groups:
            with _redis_errors_as_unavailable():
                await self.channel_layer.group_add(group, self.channel_name)


async def _cancel_firmly(task: asyncio.Task) -> Any:
    """Await `task`; if cancelled meanwhile, cancel `task` until it stops.

    channels-redis can lose a cancellation: redis-py reads a BZPOPMIN
    cancelled at the wrong moment as its timeout, and the receive loop
    starts another. The closed socket's task then lived on, and a server's
    shutdown waited for it until killed.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait({task}, timeout=LAYER_CANCEL_GRACE_SECONDS)
        for _ in range(LAYER_CANCEL_ATTEMPTS):
            if task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=LAYER_CANCEL_RETRY_SECONDS)
        raise


@contextlib.contextmanager
def _redis_errors_as_unavailable():
    """The layer's Redis out of reach is the store's: error frame, then 1011."""
    try:
        yield
    except REDIS_DOWN as error:
        raise StoreUnavailable() from error


def encode_frame(frame: dict[str, Any]) -> str:
    """Compact ASCII JSON (the outbox counts characters as bytes)."""
    return json.dumps(frame, separators=(",", ":"))


def _page_bytes() -> int:
    """Bytes of stored messages a replay sends at a time (see _send_pages).

    A quarter of the socket's output bound: with one page still unread
    and one more written, half of it is left for everything else.
    """
    return min(sync_settings.POLL_MAX_BYTES, sync_settings.WS_MAX_PENDING_BYTES // 4)


def _replay_patience() -> float:
    """Seconds a replay waits for its client to read a page: two heartbeats,
    as long as a silent socket is kept."""
    return 2.0 * sync_settings.HEARTBEAT_INTERVAL


def _frame_too_big(raw: str | bytes) -> bool:
    """Over max_body_bytes() in UTF-8, encoding only when length can't tell."""
    limit = max_body_bytes()
    if isinstance(raw, bytes) or len(raw) > limit:
        return len(raw) > limit
    # A character takes 1 to 4 bytes: most frames are decided without encoding.
    return len(raw) * 4 > limit and len(raw.encode()) > limit


def _parse_leniently(text: str | None) -> Any:
    """The frame as JSON if it parses, else None (only to find its id)."""
    try:
        return loads_strict(text) if text is not None else None
    except SyncError:
        return None
