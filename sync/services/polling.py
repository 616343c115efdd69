"""Polling reads, including long polls that wait on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.core.exceptions import TooManyWaitingPolls
from sync.services import lifecycle
from sync.store.base import MessageStore
from sync.store.cursors import Position
from sync.store.paging import ReadResult


@dataclass(frozen=True)
class PollQuery:
    """What a poll asks for; `cursor` wins over `since` when both are given."""

    since: int | None
    cursor: Position | None
    topics: tuple[str, ...]
    limit: int
    wait: float


class WaitingPolls:
    """Long polls waiting per user in this process, bounded per user.

    Bound: ``SYNC_POLL_MAX_WAITING_PER_USER``. One more poll that would wait
    is answered 429 (``throttled``, Retry-After 1) instead of parking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, user_id: str) -> Iterator[None]:
        """Hold one waiting slot of `user_id`, or raise TooManyWaitingPolls."""
        limit = sync_settings.POLL_MAX_WAITING_PER_USER
        with self._lock:
            if self._counts.get(user_id, 0) >= limit:
                raise TooManyWaitingPolls(details={"limit": limit})
            self._counts[user_id] = self._counts.get(user_id, 0) + 1
        metrics.waiting_polls.inc()
        try:
            yield
        finally:
            metrics.waiting_polls.dec()
            with self._lock:
                remaining = self._counts[user_id] - 1
                if remaining:
                    self._counts[user_id] = remaining
                else:
                    del self._counts[user_id]

    def count(self, user_id: str) -> int:
        """Long polls of `user_id` waiting now."""
        with self._lock:
            return self._counts.get(user_id, 0)

    def total(self) -> int:
        """Long polls of every user waiting now (the admin monitor)."""
        with self._lock:
            return sum(self._counts.values())


async def poll(
    store: MessageStore, waiting: WaitingPolls, user_id: str, query: PollQuery
) -> ReadResult:
    """Read the caller's page; if empty, wait up to `query.wait` for one.

    Each wake-up re-reads from the original position, so the answer is the
    same page a plain poll would give at that moment. On shutdown a waiting
    poll answers with what it has (empty) rather than being cut off.
    """
    metrics.poll_requests.inc()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.wait
    while True:
        result = await store.aread(
            user_id,
            since=query.since,
            cursor=query.cursor,
            topics=query.topics,
            limit=query.limit,
            max_bytes=sync_settings.POLL_MAX_BYTES,
        )
        remaining = deadline - loop.time()
        if result.count or result.gap or remaining <= 0 or lifecycle.shutting_down():
            metrics.count(metrics.DELIVERED_POLLING, result.count)
            return result
        with waiting.slot(user_id):
            await _wait(store, user_id, result, remaining)


async def _wait(
    store: MessageStore, user_id: str, result: ReadResult, timeout: float
) -> None:
    """Until a message for the reader lands, shutdown begins, or `timeout`."""
    arrival = asyncio.ensure_future(
        store.wait_for_messages(user_id, result.position, timeout)
    )
    stop = lifecycle.shutdown_future()
    try:
        await asyncio.wait({arrival, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not arrival.done():
            arrival.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await arrival
    if not arrival.cancelled():
        arrival.result()  # the store failed while waiting: answer that now (503)
