"""Frames waiting for one WebSocket, bounded in bytes (SPEC §5, close 4413).

Whoever delivers to a socket only hands the frame to its outbox and never
waits on the network, so a client that stops reading cannot stall the sender
or other sockets. A frame is written at once when nothing is queued ahead of
it (the common case costs no task switch); only while the ASGI server pushes
back does the outbox queue frames and write them from a task, in order.

Bound: ``SYNC_WS_MAX_PENDING_BYTES`` counts frames still in the outbox plus,
where the ASGI server tells us (daphne, via ``sync.ops.daphne_compat``), bytes
written but not yet taken by the client's TCP window. When a new frame would
pass it, the outbox is dropped and the socket closed with 4413: the client
reconnects and resumes by cursor, so nothing stored is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sync.core import metrics
from sync.core.protocol import CloseCode

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

DRAIN_POLL_SECONDS = 0.01
# How often a replay waiting for room asks a server that reports its own
# backlog (daphne) again, its drain not being seen here: soon at first (a
# reading client takes a page in milliseconds; a fixed 0.25 s held daphne's
# replays to about 2 MB/s), then less and less often, up to the second figure.
BACKLOG_FIRST_POLL_SECONDS = 0.005
BACKLOG_POLL_SECONDS = 0.25


def no_backlog() -> int:
    """The backlog of an ASGI server that does not tell (uvicorn)."""
    return 0


def transport_backlog(scope: dict[str, Any]) -> Callable[[], int]:
    """The ASGI server's count of unsent bytes for this socket, if it has one."""
    extension = scope.get("extensions", {}).get("sync.transport_backlog")
    return extension if callable(extension) else no_backlog


def start_eagerly(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task | None:
    """Run `coroutine` now, up to its first real suspension.

    Returns None when it finished without suspending (an ASGI send to a
    socket whose buffer has room), else a task that carries on from where it
    stopped. Python 3.12's eager tasks do the same; we are on 3.11.
    """
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coroutine, waiting_on))


async def _resume(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drive a started coroutine as a task would: wait, then step it again."""
    while True:
        try:
            if waiting_on is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                await asyncio.shield(waiting_on)
        except asyncio.CancelledError:
            coroutine.close()
            raise
        except Exception:
            pass  # the coroutine reads the future's outcome itself
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return


class Outbox:
    """Ordered, byte-bounded output of one socket."""

    def __init__(
        self, send: Send, limit: int, backlog: Callable[[], int] = no_backlog
    ) -> None:
        self._send = send
        self._limit = limit
        self._backlog = backlog
        # Made when a frame first has to wait: most sockets never need it.
        self._queued: deque[tuple[dict[str, Any], int]] | None = None
        self._bytes = 0
        self._in_flight: asyncio.Task | None = None
        # Set while a replay waits for room; resolved when a write completes.
        self._progress: asyncio.Future[None] | None = None
        self.closed = False
        self.overflowed = False
        self.finished = False  # the close frame went out, or the client left

    def put_text(self, text: str, size: int | None = None) -> bool:
        """Queue a text frame; False (and a 4413 close) when over the bound.

        `size` is its length in UTF-8 when the caller knows it (a stored
        message); left out, the text is taken for ASCII (our own frames).
        """
        if self.closed:
            return False
        if size is None:
            size = len(text)
        if self._bytes + size + self._backlog() > self._limit:
            metrics.DROPPED_SLOW_CONSUMER.inc()  # this frame never goes out
            self.give_up_on_slow_client()
            return False
        self._enqueue({"type": "websocket.send", "text": text}, size)
        return True

    def give_up_on_slow_client(self) -> None:
        """The client stopped reading: drop what is queued, close with 4413."""
        if self.closed:
            return
        self.overflowed = True
        # The frames still queued never reach the client.
        metrics.DROPPED_SLOW_CONSUMER.inc(len(self._queued or ()))
        self._abandon(CloseCode.SLOW_CONSUMER)

    def close(self, code: int) -> None:
        """Send the close frame after every frame already queued."""
        if not self.closed:
            self.closed = True
            self._enqueue({"type": "websocket.close", "code": int(code)}, 0)

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until everything queued was written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled: drain runs once per closing socket, and an event here would
        # cost a set/clear on every frame of the hot path instead.
        while not self._idle() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    async def wait_for_room(self, room: int, timeout: float) -> bool:
        """Wait until at most `room` bytes are left to write; False if the
        socket closed meanwhile, or the output is still above `room` after
        `timeout` seconds (a client that stopped reading).

        For long outputs written piece by piece (a replay): each piece is
        made only once the client has taken most of the one before, so a
        socket never holds more than two pieces, and a socket that closes
        stops the output at once. Woken when a write completes; a server
        that reports its own backlog (daphne) is asked again as well, soon
        at first and then up to every ``BACKLOG_POLL_SECONDS``, since nothing
        here sees it drain.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # One turn of the loop at least: while the kernel takes every byte
        # at once, pages would otherwise follow each other without a pause,
        # holding up every other socket and the news that this one closed.
        await asyncio.sleep(0)
        backlog_poll = BACKLOG_FIRST_POLL_SECONDS
        while self._bytes + self._backlog() > room:
            remaining = deadline - loop.time()
            if self.closed or remaining <= 0:
                return False
            if self._backlog is not no_backlog:
                remaining = min(remaining, backlog_poll)
                backlog_poll = min(backlog_poll * 2, BACKLOG_POLL_SECONDS)
            self._progress = loop.create_future()
            try:
                await asyncio.wait({self._progress}, timeout=remaining)
            finally:
                self._progress = None
        return not self.closed

    def stop(self) -> None:
        """Stop writing at once (the socket is gone)."""
        self._wake_waiting_replay()
        self.closed = self.finished = True
        self._queued = None
        self._bytes = 0
        if self._in_flight is not None:
            self._in_flight.cancel()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued here and not yet handed to the ASGI server."""
        return self._bytes

    def _idle(self) -> bool:
        return self.finished or (self._in_flight is None and not self._queued)

    def _abandon(self, code: int) -> None:
        self._wake_waiting_replay()
        # The client is not reading: what is queued would never get through
        # in time, so drop it (and any frame stuck in the server) and close.
        self._queued = None
        self._bytes = 0
        self.closed = True
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None
        self._enqueue({"type": "websocket.close", "code": int(code)}, 0)

    def _enqueue(self, message: dict[str, Any], size: int) -> None:
        if self.finished:
            return
        if self._in_flight is None and not self._queued:
            self._write(message)  # nothing ahead of it: straight out
            return
        if self._queued is None:
            self._queued = deque()
        self._queued.append((message, size))
        self._bytes += size

    def _pump(self) -> None:
        """Write queued frames until one has to wait for the client."""
        while self._queued and self._in_flight is None and not self.finished:
            message, size = self._queued.popleft()
            self._bytes -= size
            self._write(message)

    def _write(self, message: dict[str, Any]) -> None:
        try:
            pending = start_eagerly(self._send(message))
        except Exception as error:
            self._gone(error)
            return
        if message["type"] == "websocket.close":
            self.finished = pending is None
        if pending is not None:
            self._in_flight = pending
            pending.add_done_callback(self._written)

    def _wake_waiting_replay(self) -> None:
        """A write completed, or the socket closed: a waiting replay looks again."""
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)

    def _written(self, task: asyncio.Task) -> None:
        self._wake_waiting_replay()
        if task is not self._in_flight:
            return  # cancelled by _abandon; the close frame is next
        self._in_flight = None
        if task.cancelled():
            return
        if task.exception() is not None:
            self._gone(task.exception())
            return
        self._pump()

    def _gone(self, error: BaseException) -> None:
        # A frame racing the client's close: nothing more can be written.
        logger.debug("websocket send failed: %s", type(error).__name__)
        self._wake_waiting_replay()
        self.closed = self.finished = True
        self._queued = None
        self._bytes = 0
