"""RealtimeSync: the one place that publishes (SPEC §6).

Publishing stores the message first, then hands it to this process's
delivery hub for live sockets; long polls are woken by the store itself.
Inside a database transaction the sync calls wait for the commit, so no
client sees data that is rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.db import transaction

from sync.core import jsontext, metrics, validation
from sync.services.audit import (
    amark_unpublished,
    arecord_broadcast,
    mark_unpublished,
    record_broadcast,
)
from sync.services.connections import MemoryConnectionRegistry
from sync.services.handlers import HandlerRuns, run_handlers
from sync.services.hub import DeliveryHub
from sync.services.polling import WaitingPolls
from sync.services.ratelimit import CounterTables
from sync.services.token_cache import TokenCache
from sync.store.base import MessageStore
from sync.store.envelopes import Draft
from sync.store.paging import BROADCAST, StoredMessage
from sync.store.presence import ClusterConnections

logger = logging.getLogger(__name__)

DATA_UPDATED = "data.updated"
# Seconds between reports of this process's socket figures to the others.
CONNECTION_REPORT_SECONDS = 2
ERROR = "error"


def new_message_id() -> str:
    """A unique, unguessable message id."""
    return f"msg_{secrets.token_hex(12)}"


class Message(dict):
    """A message's envelope as publishers get it back, a plain dict to them.

    It also carries its payload as validated and encoded (``payload_json``),
    which is what the store keeps: the payload is encoded once, never again.
    """

    __slots__ = ("payload_json",)

    def draft(self) -> Draft:
        """What the store takes: the envelope, with the payload as encoded."""
        return Draft.of(self, self.payload_json)


def build_message(
    type: str,
    payload: dict[str, Any],
    *,
    payload_json: bytes | None = None,
    user_id: Any = None,
    topics: Iterable[str] = (),
    correlation_id: str | None = None,
) -> Message:
    """The envelope of the contract; the store fills in timestamp and cursor.

    `payload_json` is the payload as ``validate_payload`` encoded it; left
    out, the payload is encoded as it is, unchecked (tests, trusted code).
    """
    message = Message(
        id=new_message_id(),
        type=type,
        payload=payload,
        timestamp=None,
        userId=None if user_id is None else str(user_id),
        topics=list(topics),
        cursor=None,
        correlationId=correlation_id,
    )
    if payload_json is None:
        payload_json = jsontext.encode_value(payload)
    message.payload_json = payload_json
    return message


def _refuse_event_loop(name: str) -> None:
    # async_to_sync cannot run inside a loop: say which call to use instead.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() was called from async code; use `await a{name}()`.")


def _require_user(user_id: Any) -> Any:
    if user_id is None or user_id == "":
        raise ValueError("user_id is required; use broadcast() to reach everyone.")
    return user_id


class RealtimeSync:
    """Publish to users, broadcast to everyone, and report statistics."""

    def __init__(
        self,
        store: MessageStore,
        hub: DeliveryHub,
        connections: MemoryConnectionRegistry,
    ) -> None:
        self.store = store
        self.hub = hub
        self.connections = connections
        # What else this process holds for as long as it serves; a new
        # RealtimeSync (reset_services) starts them all afresh.
        self.handler_runs = HandlerRuns()  # handler calls, in order per user
        self.waiting_polls = WaitingPolls()  # long polls parked, per user
        self.token_cache = TokenCache()  # API tokens trusted for a while
        self.counters = CounterTables()  # rate limits counted in the process
        self._opened_reported = 0
        self._reporter: asyncio.Task | None = None

    @property
    def instance_id(self) -> str:
        """Names this process among the instances sharing its store."""
        return self.store.instance_id

    # Server publishers -----------------------------------------------------

    def publish(
        self,
        type: str,
        payload: dict[str, Any],
        user_id: Any,
        *,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Send `type`/`payload` to every connection of `user_id`.

        Returns the message; inside a transaction its timestamp and cursor
        are filled in when the commit publishes it.
        """
        _refuse_event_loop("publish")
        message = self._server_message(type, payload, user_id, correlation_id)
        self._deliver_after_commit(message)
        return message

    def publish_data_update(self, section: str, data: Any, user_id: Any) -> dict:
        """Publish ``data.updated`` with payload ``{section, data}``."""
        return self.publish(DATA_UPDATED, {"section": section, "data": data}, user_id)

    def publish_error(self, error: dict[str, Any], user_id: Any) -> dict:
        """Publish an ``error`` message, e.g. ``{"type", "message", "context"}``."""
        return self.publish(ERROR, error, user_id)

    def broadcast(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        topics: Iterable[str] | None = None,
        *,
        sent_by: Any = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Send to every connection, or to those subscribed to any of `topics`.

        With `source` ("api", "admin", "command") the broadcast is recorded in
        the history, in the same transaction that publishes it; if the store
        refuses it, the record says so (``published`` false).
        """
        _refuse_event_loop("broadcast")
        message = self._broadcast_message(type, payload, topics)
        if source is None:
            self._deliver_after_commit(message)
            return message
        with transaction.atomic():
            record_broadcast(message, sent_by, source)
            self._deliver_after_commit(message, self._deliver_recorded)
        return message

    def get_stats(self) -> dict[str, Any]:
        """Queue and connection figures (SPEC §6), of every live instance."""
        elsewhere = self.store.presence.connections_elsewhere(self.instance_id)
        return self._stats_dict(self.store.stats(), elsewhere)

    async def apublish(
        self,
        type: str,
        payload: dict[str, Any],
        user_id: Any,
        *,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Async twin of publish (no transaction to wait for)."""
        message = self._server_message(type, payload, user_id, correlation_id)
        await self._adeliver(message)
        return message

    async def apublish_data_update(self, section: str, data: Any, user_id: Any) -> dict:
        """Async twin of publish_data_update."""
        payload = {"section": section, "data": data}
        return await self.apublish(DATA_UPDATED, payload, user_id)

    async def apublish_error(self, error: dict[str, Any], user_id: Any) -> dict:
        """Async twin of publish_error."""
        return await self.apublish(ERROR, error, user_id)

    async def abroadcast(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        topics: Iterable[str] | None = None,
        *,
        sent_by: Any = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Async twin of broadcast.

        With `source` the broadcast is recorded first: delivering wakes every
        waiting long poll, and the record must not queue behind them.
        """
        message = self._broadcast_message(type, payload, topics)
        if source is None:
            await self._adeliver(message)
            return message
        await arecord_broadcast(message, sent_by, source)
        try:
            await self._adeliver(message)
        except Exception:  # refused (a cancelled request may have published it)
            await amark_unpublished(message)
            raise
        return message

    async def aget_stats(self) -> dict[str, Any]:
        """Async twin of get_stats."""
        elsewhere = await self.store.presence.aconnections_elsewhere(self.instance_id)
        return self._stats_dict(await self.store.astats(), elsewhere)

    # This instance's sockets, for the others (Redis) ---------------------------

    def report_connections_from_now(self) -> None:
        """Start reporting this process's socket figures (once, on the loop)."""
        if not self.store.shared:
            return  # no other instance to tell
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(
                self._report_forever()
            )

    async def _report_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.areport_connections()
                failing = False
            except Exception:
                if not failing:  # once per outage
                    logger.warning("socket figures not reported; retrying")
                failing = True
            await asyncio.sleep(CONNECTION_REPORT_SECONDS)

    async def areport_connections(self) -> None:
        """Publish this process's figures now (see MessageStore)."""
        local = self.connections.stats()
        opened = local.total - self._opened_reported
        await self.store.presence.areport_connections(
            self.instance_id, local.active, local.subscriptions, opened
        )
        self._opened_reported = local.total

    def forget_connections(self) -> None:
        """Leave the cluster's figures at once (shutdown)."""
        if self._reporter is not None:
            self._reporter.cancel()
        self.store.presence.forget_connections(self.instance_id)

    # Client messages (POST /send and WebSocket frames) ----------------------

    def send_from_client(self, user: Any, message: validation.MessageInput) -> dict:
        """Deliver a validated client message to all of the sender's connections.

        Not deferred to a commit: the client is waiting for the ack.
        """
        envelope = self._client_message(user, message)
        self._deliver(envelope)
        run_handlers(envelope, user)
        return envelope

    async def asend_from_client(
        self, user: Any, message: validation.MessageInput
    ) -> dict[str, Any]:
        """Async twin of send_from_client, without the handlers.

        The caller hands the message to ``handler_runs`` once it has
        answered the client, so a slow handler never delays the answer.
        """
        envelope = self._client_message(user, message)
        await self._adeliver(envelope)
        return envelope

    # Internals --------------------------------------------------------------

    def _client_message(self, user: Any, message: validation.MessageInput) -> Message:
        payload_json = message.payload_json
        if payload_json is None:
            payload_json = validation.validate_payload(message.payload)
        return build_message(
            message.type,
            message.payload,
            payload_json=payload_json,
            user_id=user.pk,
            correlation_id=message.correlation_id,
        )

    def _server_message(
        self, type: str, payload: Any, user_id: Any, correlation_id: str | None
    ) -> Message:
        return build_message(
            validation.validate_type(type, from_client=False),
            payload,
            payload_json=validation.validate_payload(payload),
            user_id=_require_user(user_id),
            correlation_id=validation.validate_correlation_id(correlation_id),
        )

    def _broadcast_message(
        self, type: str, payload: Any, topics: Iterable[str] | None
    ) -> Message:
        payload = {} if payload is None else payload
        return build_message(
            validation.validate_type(type, from_client=False),
            payload,
            payload_json=validation.validate_payload(payload),
            topics=validation.validate_topics(None if topics is None else list(topics)),
        )

    def _deliver_after_commit(self, message: dict[str, Any], deliver=None) -> None:
        # Outside a transaction deliver now, without opening a DB connection
        # (on_commit would open one just to learn there is no transaction).
        deliver = deliver or self._deliver
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(partial(deliver, message))
        else:
            deliver(message)

    def _deliver_recorded(self, message: dict[str, Any]) -> None:
        """Deliver a recorded broadcast; flag its record if the store refuses it."""
        try:
            self._deliver(message)
        except Exception:
            mark_unpublished(message)
            raise

    def _deliver(self, message: Message) -> StoredMessage:
        entry = self.store.add_message(message.draft())
        _count_published(entry)
        _stamp_from(message, entry)
        self.hub.dispatch_threadsafe(entry)
        return entry

    async def _adeliver(self, message: Message) -> StoredMessage:
        entry = await self.store.aadd_message(message.draft())
        _count_published(entry)
        _stamp_from(message, entry)
        self.hub.dispatch_threadsafe(entry)
        return entry

    def _stats_dict(
        self, store_stats: Any, elsewhere: ClusterConnections
    ) -> dict[str, Any]:
        local = self.connections.stats()
        # Ours are counted live; the cluster counter has what we reported.
        opened = elsewhere.opened + local.total - self._opened_reported
        return {
            "messageQueue": {
                "totalQueues": store_stats.total_queues,
                "totalMessages": store_stats.total_messages,
            },
            "websocket": {
                "activeConnections": local.active + elsewhere.active,
                "totalConnections": opened,
                "subscriptions": local.subscriptions + elsewhere.subscriptions,
            },
        }


def _count_published(entry: StoredMessage) -> None:
    # Counted where it is stored: other instances' messages are theirs.
    if entry.queue == BROADCAST:
        metrics.PUBLISHED_BROADCAST.inc()
    else:
        metrics.PUBLISHED_USER.inc()


def _stamp_from(message: dict[str, Any], entry: StoredMessage) -> None:
    """Copy the store's timestamp (and, for a user message, its cursor)."""
    message["timestamp"] = entry.timestamp
    if entry.queue != BROADCAST:
        # A broadcast's cursor depends on each reader's own queue: none here.
        message["cursor"] = entry.publish_cursor
