"""Process shutdown, as the service layer sees it.

On SIGTERM the ASGI server adapter (``sync.ops.daphne_compat`` or
``sync.ops.uvicorn_compat``) calls ``begin_shutdown``: waiting long polls then
answer at once (empty) instead of being cut, so every request in flight gets
a response before the process exits, and the listeners registered with
``on_shutdown`` run (the delivery hub closes every socket with 1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)

_stopping = threading.Event()
_waiting: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()
_lock = threading.Lock()
_listeners: list[Callable[[], None]] = []


def shutting_down() -> bool:
    """True once the process has started to shut down."""
    return _stopping.is_set()


def shutdown_future() -> asyncio.Future[None]:
    """A future on the running loop, resolved when shutdown begins."""
    future = asyncio.get_running_loop().create_future()
    with _lock:
        if _stopping.is_set():
            future.set_result(None)
        else:
            _waiting.add(future)
    return future


def on_shutdown(listener: Callable[[], None]) -> None:
    """Call `listener` once when shutdown begins (registered once per process)."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def begin_shutdown() -> None:
    """Resolve every shutdown future and run the listeners; from any thread."""
    with _lock:
        first = not _stopping.is_set()
        _stopping.set()
        futures = list(_waiting)
        _waiting.clear()
        listeners = list(_listeners) if first else []
    for future in futures:
        with contextlib.suppress(RuntimeError):  # its loop is already closed
            future.get_loop().call_soon_threadsafe(_resolve, future)
    for listener in listeners:
        try:
            listener()
        except Exception:
            logger.exception("shutdown listener failed")


def reset() -> None:
    """Forget a shutdown (tests run many 'processes' in one)."""
    _stopping.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
