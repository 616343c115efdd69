"""Long polls parked until their queue moves, woken from any thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Waiter:
    """A long poll parked on the event loop that created it."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def wake(self) -> None:
        """Resolve the future from any thread."""
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Waiters:
    """Long polls of this process, woken by publishes through this store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, set[Waiter]] = {}

    def add(self, key: str) -> Waiter:
        """Park a new waiter for `key`'s queues (register before checking)."""
        waiter = Waiter()
        with self._lock:
            self._by_user.setdefault(key, set()).add(waiter)
        return waiter

    def discard(self, key: str, waiter: Waiter) -> None:
        """Forget a waiter that is done; safe to call twice."""
        with self._lock:
            waiters = self._by_user.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_user[key]

    def wake(self, user_id: str | None) -> None:
        """A broadcast may concern anyone; a user message only that user."""
        with self._lock:
            if user_id is None:
                waiters = [w for group in self._by_user.values() for w in group]
            else:
                waiters = list(self._by_user.get(str(user_id), ()))
        for waiter in waiters:
            waiter.wake()
