"""The bus between instances on one Redis: one subscription per process.

Every append publishes its queue, its instance and its entry on one pub/sub
channel (``<prefix>wake``); every revocation goes on a second
(``<prefix>revoke``). One subscription per store (a thread, started by the
first long poll, socket or revocation listener) hears both: it wakes the
long polls waiting on that queue, whichever instance appended; hands other
instances' entries to this process's hub, as bytes, never parsed; and hands
revocations to the service layer, so every process drops its cached token
and closes its sockets at once. A (re)subscription wakes every waiter once
and has every socket catch up, to re-check what was published while it was
not listening; revocations published meanwhile count as missed.

A thread rather than a task: long polls run on whichever event loop serves
them, and waking a waiter is thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis

from sync.store.bus import Bus, RemoteDelivery, RevocationListener
from sync.store.failures import unavailable_when_down
from sync.store.paging import BROADCAST, USER
from sync.store.redis_connection import RedisConnection, client_options
from sync.store.redis_entries import BROADCAST_QUEUE, entry_of
from sync.store.waiting import Waiters

logger = logging.getLogger(__name__)

# How long the subscription blocks reading before it checks whether it was
# asked to stop.
LISTEN_POLL_SECONDS = 1.0
# Pause before subscribing again after Redis dropped the subscription.
RESUBSCRIBE_DELAY_SECONDS = 1.0


class RedisBus(Bus):
    """Other instances' messages and every process's revocations, by Redis."""

    def __init__(
        self, connection: RedisConnection, waiters: Waiters, instance_id: str
    ) -> None:
        self.connection = connection
        self.waiters = waiters
        self.instance_id = instance_id
        self.wake_channel = f"{connection.prefix}wake"
        self.revoke_channel = f"{connection.prefix}revoke"
        self._remote: RemoteDelivery | None = None
        self._revocations: RevocationListener | None = None
        self._listener: Subscription | None = None
        self._lock = threading.Lock()

    def deliver_remote_to(self, delivery: RemoteDelivery) -> None:
        """Hand messages other instances append to `delivery` (the hub).

        `delivery.dispatch_threadsafe(entry)` gets each one, from the
        subscription's thread; `delivery.catch_up_all()` runs when the
        subscription is back after a loss, since messages published
        meanwhile never came. A message lost on the way is also caught by
        its queue sequence at the next one, or at the socket's next heartbeat.
        """
        self._remote = delivery
        self.listen()

    def hear_revocations(self, listener: RevocationListener) -> None:
        """Hand every process's revocations to `listener`, from the thread:
        `revoked(user_id, token_key)` for each (token_key None: all of the
        user's), and `revocations_missed()` whenever the subscription starts
        or comes back."""
        self._revocations = listener
        self.listen()

    def publish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Tell every process on this Redis, this one included."""
        message = json.dumps([user_id, token_key])
        with unavailable_when_down():
            self.connection.client.publish(self.revoke_channel, message)

    async def apublish_revocation(self, user_id: str, token_key: str | None) -> None:
        """Async twin of publish_revocation."""
        message = json.dumps([user_id, token_key])
        with unavailable_when_down():
            await self.connection.async_client().publish(self.revoke_channel, message)

    def listen(self) -> None:
        """Start the subscription, once."""
        with self._lock:
            if self._listener is None:
                self._listener = Subscription(self)
                self._listener.start()

    def close(self) -> None:
        """Stop the subscription (tests; a server keeps its store)."""
        with self._lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener.join(LISTEN_POLL_SECONDS * 2)
                self._listener = None

    # From the subscription's thread ---------------------------------------

    def subscribed(self) -> None:
        """Listening again: re-check whatever came while not listening."""
        self.waiters.wake(None)
        if self._remote is not None:
            self._remote.catch_up_all()
        if self._revocations is not None:
            self._revocations.revocations_missed()

    def appended(self, data: bytes) -> None:
        """``<queue>\\n<instance>\\n<entry>``, as bytes: the text is passed on."""
        queue_name, _, published = data.partition(b"\n")
        queue = queue_name.decode()
        # A broadcast may concern anyone; a user message only that user.
        user_id = None if queue == BROADCAST_QUEUE else queue.removeprefix("u:")
        self.waiters.wake(user_id)
        source, _, raw = published.partition(b"\n")
        if not raw or source.decode() == self.instance_id or self._remote is None:
            return
        entry = entry_of(raw, USER if user_id else BROADCAST, user_id)
        self._remote.dispatch_threadsafe(entry)

    def revoked(self, data: bytes) -> None:
        """A revocation any process published."""
        if self._revocations is None:
            return
        try:
            user_id, token_key = json.loads(data)
        except (ValueError, TypeError):  # not ours: the subscription goes on
            logger.warning("malformed revocation ignored")
            return
        self._revocations.revoked(str(user_id), token_key)


def subscription_name(wake_channel: str, instance_id: str) -> str:
    """The subscription's connection name in Redis's CLIENT LIST (no spaces)."""
    return f"{wake_channel}:{instance_id}".replace(" ", "_")


class Subscription(threading.Thread):
    """The one subscription of a store: both channels, on its own client,
    whose messages stay bytes."""

    def __init__(self, bus: RedisBus) -> None:
        super().__init__(name="sync-store-wake", daemon=True)
        self._bus = bus
        # Named, so that CLIENT LIST tells which instance a subscription is.
        self._client = redis.Redis.from_url(
            bus.connection.url,
            client_name=subscription_name(bus.wake_channel, bus.instance_id),
            **client_options(decode=False),
        )
        self._wake = bus.wake_channel.encode()
        self._revoke = bus.revoke_channel.encode()
        self._stopping = threading.Event()
        self._lost = False  # the subscription failed and is not back yet
        self._pubsub: redis.client.PubSub | None = None

    def stop(self) -> None:
        """End the thread: its blocking read is cut short by closing its
        connection, so a store closes at once rather than after a poll."""
        self._stopping.set()
        pubsub = self._pubsub
        connection = pubsub.connection if pubsub is not None else None
        if connection is not None:
            connection.disconnect()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            # The listener outlives any error; meanwhile waits end at their
            # timeout, and the next subscription wakes them all to re-check.
            except Exception:
                if self._stopping.is_set():  # stop() closed the connection
                    break
                if not self._lost:  # once per outage, not once per retry
                    logger.warning("store wake-up subscription lost; retrying")
                self._lost = True
                self._stopping.wait(RESUBSCRIBE_DELAY_SECONDS)

    def _listen(self) -> None:
        self._pubsub = pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self._wake, self._revoke)
            while not self._stopping.is_set():
                event = pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
                if event is not None:
                    self._handle(event)
        finally:
            pubsub.close()

    def _handle(self, event: dict[str, Any]) -> None:
        if event["type"] == "subscribe":
            if event["channel"] == self._wake:  # once per (re)subscription
                self._lost = False
                self._bus.subscribed()
        elif event["type"] == "message":
            if event["channel"] == self._revoke:
                self._bus.revoked(event["data"])
            else:
                self._bus.appended(event["data"])
