"""The per-process delivery hub: stored messages to local sockets, encoded once.

Every live socket of this process registers here, by user. Publishing hands
the stored message to the hub, which encodes its envelope once and gives
each socket that may see it the same bytes, with only the reader's cursor
spliced in. No channel-layer message and no task per socket: one broadcast
to N sockets is one loop over N subscribers on the event loop.

The hub only ever runs on the event loop that serves the sockets; a publish
from another thread (a sync view, a signal in a worker) is handed to that
loop. Order across threads is therefore not guaranteed, which the readers
tolerate: a queue sequence that jumps makes the socket read the store first.
Across processes (Redis) one subscription per process feeds
``dispatch_threadsafe`` with what other instances store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from sync.core import metrics
from sync.store.paging import BROADCAST, StoredMessage

logger = logging.getLogger(__name__)


class EncodedMessage:
    """A stored message's frame as text, decoded once for all its readers."""

    __slots__ = ("entry", "prefix", "size", "suffix")

    def __init__(self, entry: StoredMessage) -> None:
        self.entry = entry
        self.prefix = entry.prefix.decode()
        self.suffix = entry.suffix.decode()
        self.size = entry.text_size  # bytes on the wire, cursor included

    def text_for(self, cursor: str) -> str:
        """The frame for a reader whose position after this message is `cursor`."""
        return f'{self.prefix}"{cursor}"{self.suffix}'


class Subscriber(Protocol):
    """What the hub needs of a socket (the consumer)."""

    def on_message(self, message: EncodedMessage) -> bool | None:
        """Take one stored message; must not block. True: it was sent now."""

    def close_now(self, code: int) -> None:
        """Queue a close frame with `code`; must not block."""

    def revoke(self, token_key: str | None) -> None:
        """Close with 4401 if opened by `token_key` (None: whatever opened it)."""

    async def catch_up_if_behind(self) -> None:
        """Read from the store whatever this socket has not seen."""


class DeliveryHub:
    """Live sockets of this process, by user; fed stored messages."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Subscriber]] = {}
        self._everyone: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._catching_up: set[asyncio.Task] = set()  # keeps the tasks alive

    def add(self, subscriber: Subscriber, user_id: str) -> None:
        """Register a socket (on the event loop that serves it)."""
        self._loop = asyncio.get_running_loop()
        self._by_user.setdefault(user_id, set()).add(subscriber)
        self._everyone.add(subscriber)

    def remove(self, subscriber: Subscriber, user_id: str) -> None:
        """Forget a socket; safe to call twice."""
        self._everyone.discard(subscriber)
        sockets = self._by_user.get(user_id)
        if sockets is not None:
            sockets.discard(subscriber)
            if not sockets:
                del self._by_user[user_id]

    @property
    def socket_count(self) -> int:
        """Sockets registered now."""
        return len(self._everyone)

    def dispatch(self, entry: StoredMessage) -> int:
        """Hand `entry` to every local socket that may see it; return how many.

        Broadcasts go to every socket, topic ones included: a reader that does
        not follow the topic only notes the sequence number, so its next
        broadcast is not mistaken for a gap.
        """
        if entry.queue == BROADCAST:
            receivers = list(self._everyone)
        else:
            receivers = list(self._by_user.get(entry.user_id, ()))
        if not receivers:
            return 0
        message = EncodedMessage(entry)
        sent = 0
        for subscriber in receivers:
            try:
                if subscriber.on_message(message):
                    sent += 1
            except Exception:
                # One broken socket must not cost the others their message.
                logger.exception(
                    "delivery to one socket failed",
                    extra={"connection_id": _connection_id(subscriber)},
                )
        if sent:  # counted once per fan-out, not once per socket
            metrics.record_live_delivery(sent, entry.timestamp)
        return len(receivers)

    def close_all(self, code: int) -> None:
        """Close every local socket with `code` (1001 on shutdown), from any thread."""
        loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._close_all(code)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._close_all, code)

    def revoke(self, user_id: str, token_key: str | None) -> None:
        """Close the user's sockets (those opened by `token_key`), from any thread."""
        loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._revoke(user_id, token_key)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._revoke, user_id, token_key)

    def _revoke(self, user_id: str, token_key: str | None) -> None:
        for subscriber in list(self._by_user.get(user_id, ())):
            subscriber.revoke(token_key)

    def catch_up_all(self) -> None:
        """Have every local socket read what it missed, from any thread.

        For when live delivery may have lost messages wholesale (the Redis
        subscription was down): each socket then reads the store once.
        """
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._catch_up_all)

    def _catch_up_all(self) -> None:
        for subscriber in list(self._everyone):
            task = asyncio.ensure_future(subscriber.catch_up_if_behind())
            self._catching_up.add(task)
            task.add_done_callback(self._catching_up.discard)

    def _close_all(self, code: int) -> None:
        for subscriber in list(self._everyone):
            try:
                subscriber.close_now(code)
            except Exception:
                logger.exception(
                    "closing one socket failed",
                    extra={"connection_id": _connection_id(subscriber)},
                )

    def dispatch_threadsafe(self, entry: StoredMessage) -> None:
        """`dispatch` from any thread: now on the loop, else scheduled onto it."""
        loop = self._loop
        if loop is None:
            return  # no socket was ever opened in this process
        with contextlib.suppress(RuntimeError):
            if _running_loop() is loop:
                self.dispatch(entry)
            else:
                loop.call_soon_threadsafe(self.dispatch, entry)


def _connection_id(subscriber: Subscriber) -> str | None:
    """The socket's connection id for a log line, if it has one."""
    return getattr(subscriber, "connection_id", None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
