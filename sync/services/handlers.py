"""Server-side handlers for message types that clients send.

Register with the decorator, from a module your AppConfig.ready() imports::

    from sync.services import message_handler

    @message_handler("todo.add")
    def add_todo(message, user):
        ...

A handler receives the stamped message (as stored: id, userId, timestamp…)
and the sending user. It runs after the message is accepted and delivered, so
a failing handler is logged and never turns an accepted message into an error.
Sync and async handlers are both accepted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

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
    """Call every handler of the message's type from async code."""
    for handler in handlers_for(message["type"]):
        try:
            if inspect.iscoroutinefunction(handler):
                await handler(message, user)
            else:
                await sync_to_async(handler)(message, user)
        except Exception:
            _log_failure(handler, message)


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
