"""Heartbeats of every socket of one process, driven by one task.

One task per event loop ticks a few times per interval: it pings each socket
whose interval has passed, closes with 4408 those silent for two intervals,
re-checks the user and token of the sockets it pings in one batched query
(4401 when revoked: catches changes no signal reached, such as a shell on
another host or a ``QuerySet.update``), and has sockets that fell behind the
store catch up. One task instead of one per socket keeps an idle socket cheap
in memory and CPU.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from sync.core.conf import sync_settings
from sync.core.protocol import CloseCode
from sync.services import on_reset
from sync.services.revocation import afind_revoked

logger = logging.getLogger(__name__)

# Ticks per interval, at most one per second: a silent socket is closed at
# most a quarter interval (or a second) late.
TICKS_PER_INTERVAL = 4
MAX_TICK_SECONDS = 1.0


class Beating(Protocol):
    """What the heartbeat needs of a socket (the consumer)."""

    last_seen: float
    credentials: tuple[Any, str | None]

    def close_now(self, code: int) -> None: ...

    def send_ping(self) -> None: ...

    async def catch_up_if_behind(self) -> None: ...


class Heartbeats:
    """The sockets of one loop, each with the time of its next ping."""

    def __init__(self) -> None:
        self._next_ping: dict[Beating, float] = {}
        self._task: asyncio.Task | None = None

    def add(self, socket: Beating) -> None:
        """Start beating for `socket` (on the loop that serves it)."""
        loop = asyncio.get_running_loop()
        self._next_ping[socket] = loop.time() + sync_settings.HEARTBEAT_INTERVAL
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def remove(self, socket: Beating) -> None:
        """Stop beating for `socket`; safe to call twice."""
        self._next_ping.pop(socket, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._next_ping:
            interval = sync_settings.HEARTBEAT_INTERVAL
            await asyncio.sleep(min(interval / TICKS_PER_INTERVAL, MAX_TICK_SECONDS))
            try:
                await self._beat(loop.time(), interval)
            except Exception:
                logger.exception("heartbeat failed; trying again next tick")

    async def _beat(self, now: float, interval: float) -> None:
        due = []
        for socket, next_ping in list(self._next_ping.items()):
            if now >= socket.last_seen + 2 * interval:
                self.remove(socket)
                socket.close_now(CloseCode.SILENT)
            elif now >= next_ping:
                self._next_ping[socket] = next_ping + interval
                due.append(socket)
        if due:
            await self._ping(due)

    async def _ping(self, due: list[Beating]) -> None:
        revoked = await self._revoked(due)
        for socket in due:
            if socket.credentials in revoked:
                self.remove(socket)
                socket.close_now(CloseCode.UNAUTHENTICATED)
            else:
                socket.send_ping()
        for socket in due:
            if socket in self._next_ping:
                await socket.catch_up_if_behind()

    @staticmethod
    async def _revoked(due: list[Beating]) -> set:
        try:
            return await afind_revoked([socket.credentials for socket in due])
        except Exception:
            # A database hiccup is no proof of revocation: keep the sockets.
            logger.warning("authorization re-check failed", exc_info=True)
            return set()


_by_loop: dict[asyncio.AbstractEventLoop, Heartbeats] = {}
on_reset(_by_loop.clear)  # a new service starts with no socket to beat for


def heartbeats() -> Heartbeats:
    """The heartbeat of the running loop's sockets."""
    loop = asyncio.get_running_loop()
    beats = _by_loop.get(loop)
    if beats is None:
        for stale in [other for other in _by_loop if other.is_closed()]:
            del _by_loop[stale]
        beats = _by_loop[loop] = Heartbeats()
    return beats
