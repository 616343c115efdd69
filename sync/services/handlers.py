"""Server-side handlers for message types that clients send.

Register with the decorator, from a module your AppConfig.ready() imports::

    from sync.services import message_handler

    @message_handler("todo.add")
    def add_todo(message, user):
        ...

A handler receives the stamped message (as stored: id, userId, timestamp…)
and the sending user. It runs after the message is accepted and delivered, so
a failing handler is logged and never turns an accepted message into an error.
Sync and async handlers are both accepted. They run after the answer (the
ack, the HTTP response), in order per user whichever transport each message
came by, in tasks of their own (sync ones in worker threads, not on the one
shared sync thread), so a slow handler never holds up a socket or a request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from sync.core.exceptions import SyncError
from sync.core.protocol import ErrorCode

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
    """Too many of this user's (or this process's) messages wait for handlers."""

    status_code = 429
    default_code = ErrorCode.THROTTLED
    default_detail = "Server-side handlers are busy; this message was not accepted."


class HandlerRuns:
    """The handler calls of accepted messages, in order per user.

    One runner per process serves both transports: a user's messages reach
    their handlers in the order they were accepted, over HTTP or WebSocket,
    each run after the answer (the ack, the HTTP response) in a task chained
    after the user's previous one, so a slow handler never delays an answer.

    Bound: ``MAX_PENDING_PER_USER`` runs of one user and ``MAX_PENDING`` in
    the process. A message of a type that has handlers is refused with 429
    ``throttled`` before it is stored when either is reached, so nothing
    accepted is dropped. Runs still pending when a socket closes go on: the
    message was accepted.
    """

    MAX_PENDING = 1000
    MAX_PENDING_PER_USER = 100

    def __init__(self) -> None:
        self._last_by_user: dict[str, asyncio.Task[None]] = {}
        self._pending_by_user: dict[str, int] = {}
        self._pending = 0

    def check_room(self, message_type: str, user_id: Any) -> None:
        """Raise HandlersBusy if a message of this type could not be run."""
        if not handlers_for(message_type):
            return
        if self._pending >= self.MAX_PENDING:
            raise HandlersBusy(details={"limit": self.MAX_PENDING})
        if self._pending_by_user.get(str(user_id), 0) >= self.MAX_PENDING_PER_USER:
            raise HandlersBusy(details={"limit": self.MAX_PENDING_PER_USER})

    def submit(self, message: dict[str, Any], user: Any) -> None:
        """Run the handlers of an accepted message after the user's earlier ones."""
        if not handlers_for(message["type"]):
            return
        key = str(user.pk)
        earlier = self._last_by_user.get(key)
        task = asyncio.ensure_future(_run_after(earlier, message, user))
        self._last_by_user[key] = task
        self._pending += 1
        self._pending_by_user[key] = self._pending_by_user.get(key, 0) + 1
        task.add_done_callback(lambda done: self._finished(key, done))

    @property
    def pending(self) -> int:
        """Runs not finished yet, in this process."""
        return self._pending

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._pending -= 1
        left = self._pending_by_user[key] - 1
        if left:
            self._pending_by_user[key] = left
        else:
            del self._pending_by_user[key]
        if self._last_by_user.get(key) is task:
            del self._last_by_user[key]


async def _run_after(
    earlier: asyncio.Task[None] | None, message: dict[str, Any], user: Any
) -> None:
    # A task of a closed loop (sync test client: one loop per request) is done.
    if earlier is not None and not earlier.done():
        await asyncio.wait({earlier})
    await arun_handlers(message, user)  # logs a failing handler, never raises


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
