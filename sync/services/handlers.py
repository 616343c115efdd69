"""Server-side handlers for message types that clients send.

Register with the decorator, from a module your AppConfig.ready() imports::

    from sync.services import message_handler

    @message_handler("todo.add")
    def add_todo(message, user):
        ...

A handler receives the stamped message (as stored: id, userId, timestamp…)
and the sending user. It runs after the message is accepted and delivered, so
a failing handler is logged and never turns an accepted message into an error.
Sync and async handlers are both accepted. Over WebSocket, handlers run after
the ack, in order per connection, in a task of their own (sync ones in worker
threads, not on the one shared sync thread), so a slow handler never holds up
the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from sync.core.exceptions import SyncError

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

_handlers: dict[str, list[Handler]] = {}


def message_handler(*types: str) -> Callable[[Handler], Handler]:
    """Decorator: call the function for every client message of `types`."""
    if not types:
        raise TypeError("message_handler() needs at least one message type.")

    def register(handler: Handler) -> Handler:
        for message_type in types:
            _handlers.setdefault(message_type, []).append(handler)
        return handler

    return register


def unregister(handler: Handler) -> None:
    """Remove `handler` from every type (tests, hot reload)."""
    for handlers in _handlers.values():
        while handler in handlers:
            handlers.remove(handler)


def handlers_for(message_type: str) -> list[Handler]:
    """The handlers registered for `message_type`, in registration order."""
    return list(_handlers.get(message_type, ()))


def run_handlers(message: dict[str, Any], user: Any) -> None:
    """Call every handler of the message's type from sync code."""
    for handler in handlers_for(message["type"]):
        call = (
            async_to_sync(handler) if inspect.iscoroutinefunction(handler) else handler
        )
        _guarded(call, handler, message, user)


async def arun_handlers(message: dict[str, Any], user: Any) -> None:
    """Call every handler of the message's type from async code.

    Sync handlers run in a worker thread of their own (with Django's
    connection housekeeping), not on the one thread every sync view shares.
    """
    for handler in handlers_for(message["type"]):
        try:
            if inspect.iscoroutinefunction(handler):
                await handler(message, user)
            else:
                await database_sync_to_async(handler, thread_sensitive=False)(
                    message, user
                )
        except Exception:
            _log_failure(handler, message)


class HandlersBusy(SyncError):
    """Too many of this connection's messages still wait for their handlers."""

    status_code = 429
    default_code = "throttled"
    default_detail = "Server-side handlers are busy; this message was not accepted."


class HandlerQueue:
    """One connection's handler calls, run in order by one task.

    Bound: MAX_PENDING calls. A message that would need one more is refused
    with ``throttled`` before it is stored, so nothing accepted is dropped.
    """

    MAX_PENDING = 100

    def __init__(self) -> None:
        # Made on first use: most sockets never call a handler.
        self._pending: asyncio.Queue[tuple[dict[str, Any], Any]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def check_room(self, message_type: str) -> None:
        """Raise HandlersBusy if a message of this type could not be queued."""
        waiting = self._pending.qsize() if self._pending is not None else 0
        if handlers_for(message_type) and waiting >= self.MAX_PENDING:
            raise HandlersBusy(details={"limit": self.MAX_PENDING})

    def submit(self, message: dict[str, Any], user: Any) -> None:
        """Queue the handlers of an accepted message; returns at once."""
        if not handlers_for(message["type"]):
            return
        if self._pending is None:
            self._pending = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        self._pending.put_nowait((message, user))

    def stop(self) -> None:
        """The socket is gone: calls not started yet are dropped."""
        if self._worker is not None:
            self._worker.cancel()

    async def _run(self) -> None:
        while True:
            message, user = await self._pending.get()
            with contextlib.suppress(Exception):
                await arun_handlers(message, user)


def _guarded(call: Callable, handler: Handler, message: dict, user: Any) -> None:
    try:
        call(message, user)
    except Exception:
        _log_failure(handler, message)


def _log_failure(handler: Handler, message: dict[str, Any]) -> None:
    # Type and id only: payloads may hold personal data.
    logger.exception(
        "message handler failed",
        extra={
            "handler": getattr(handler, "__qualname__", repr(handler)),
            "message_type": message["type"],
            "message_id": message["id"],
        },
    )
