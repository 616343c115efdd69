"""Process shutdown, as the service layer sees it.

On SIGTERM the ASGI server adapter (``sync.daphne_compat``) calls
``begin_shutdown``: waiting long polls then answer at once (empty) instead of
being cut, so every request in flight gets a response before the process
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref

_stopping = threading.Event()
_waiting: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()
_lock = threading.Lock()


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


def begin_shutdown() -> None:
    """Resolve every shutdown future, from any thread."""
    with _lock:
        _stopping.set()
        futures = list(_waiting)
        _waiting.clear()
    for future in futures:
        with contextlib.suppress(RuntimeError):  # its loop is already closed
            future.get_loop().call_soon_threadsafe(_resolve, future)


def reset() -> None:
    """Forget a shutdown (tests run many 'processes' in one)."""
    _stopping.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
