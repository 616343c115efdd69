"""One socket's delivery: live messages and store reads, exactly once, in order.

A socket receives messages two ways: live, from the delivery hub, and from
the store (a resume's replay, or a hole in the live sequence to fill). The
live reader decides which and when. While a store read is under way it
*fills*: live messages wait in `held` rather than overtake what the read
returns, and are judged once it is done (``streams.ReaderStream`` says for
each whether it is next, already seen, or ahead of a hole). Store reads go
page by page, each page only once the client has taken most of the one
before, so a replay of any length holds at most two pages in memory and
stops as soon as the socket closes.

It knows nothing of WebSocket: it writes to a ``ReaderOutput`` (the
consumer), which owns the outbox and the close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.core.exceptions import ServiceUnavailable
from sync.services.hub import EncodedMessage
from sync.services.streams import ReaderStream, Verdict
from sync.store.cursors import Position
from sync.store.paging import ReadResult

# Live messages held while the store is read; past it they are let go and the
# store is read again afterwards, since it holds them too.
MAX_HELD_MESSAGES = 1000


class ReaderOutput(Protocol):
    """Where a live reader writes: one socket's output."""

    @property
    def ended(self) -> bool:
        """True once nothing more may be written (closing, or the client left)."""

    def send_text(self, text: str, size: int) -> None:
        """Queue one message frame of `size` bytes; never waits."""

    async def wait_for_room(self, room: int, timeout: float) -> bool:
        """Until at most `room` bytes wait to be written (False: give up)."""

    def lost_messages(self) -> None:
        """The store lost messages this socket should have had (4409)."""

    def slow_consumer(self) -> None:
        """The client stopped reading (4413)."""

    async def unavailable(self, error: ServiceUnavailable) -> None:
        """The store is out of reach (an error frame, then 1011)."""


def page_bytes() -> int:
    """Bytes of stored messages read and sent at a time.

    A quarter of a socket's output bound: with one page still unread and one
    more written, half of it is left for everything else.
    """
    return min(sync_settings.POLL_MAX_BYTES, sync_settings.WS_MAX_PENDING_BYTES // 4)


def replay_patience() -> float:
    """Seconds a store read waits for its client to take a page: two
    heartbeats, as long as a silent socket is kept."""
    return 2.0 * sync_settings.HEARTBEAT_INTERVAL


class LiveReader:
    """The delivery state of one socket: its stream, and what waits."""

    def __init__(self, stream: ReaderStream, output: ReaderOutput) -> None:
        self.stream = stream
        self.output = output
        # Set from registration with the hub until the replay is sent.
        self.filling = True
        self.held: list[EncodedMessage] = []
        self.read_again = False  # the fill under way must read once more
        self.fill_task: asyncio.Task | None = None

    async def replay(
        self, cursor: Position | None
    ) -> tuple[Position, ReadResult | None]:
        """Start at `cursor` (or the head); the head now, and the first page.

        The first page says whether the history still reaches back
        (``gap``); send it, and the rest, with ``finish_replay``.
        """
        head = await self.stream.start(cursor)
        if cursor is None:
            return head, None
        return head, await self.stream.read_page(page_bytes())

    async def finish_replay(self, first: ReadResult | None) -> None:
        """Send the replay's pages, then what arrived live meanwhile."""
        if first is not None and await self._send_pages(first):
            self.output.lost_messages()
        await self.settle(read_first=False)

    def on_message(self, message: EncodedMessage) -> bool:
        """A stored message from the hub; never waits. True if sent now."""
        if self.output.ended:
            return False
        if self.filling:
            self._hold(message)
            return False
        verdict = self._take(message)
        if verdict is Verdict.GAP:
            self.filling = True
            self.fill_task = asyncio.create_task(self.settle())
        return verdict is Verdict.DELIVER

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Hold live messages for the block (an ack goes before its echo)."""
        already, self.filling = self.filling, True
        try:
            yield
        finally:
            if not already:
                await self.settle(read_first=False)

    async def catch_up(self) -> None:
        """Deliver now what the store holds beyond this reader's position."""
        while self.fill_task is not None and not self.fill_task.done():
            await asyncio.wait({self.fill_task})
        self.filling = True
        await self.settle()

    async def catch_up_if_behind(self) -> None:
        """Deliver a message whose live copy was the last one and got lost."""
        if self.output.ended:
            return
        if self.filling:
            # The read under way may predate what was lost: one more after it.
            self.read_again = True
        elif await self.stream.is_behind():
            await self.catch_up()

    async def settle(self, read_first: bool = True) -> None:
        """Read the store, then take the messages held meanwhile; until in step."""
        try:
            must_read = read_first
            while not self.output.ended:
                if must_read and not await self._fill_from_store():
                    return
                held, self.held = self.held, []
                must_read, self.read_again = self.read_again, False
                sent = 0
                for message in held:
                    if self.output.ended:
                        break
                    verdict = self._take(message)
                    sent += verdict is Verdict.DELIVER
                    must_read = must_read or verdict is Verdict.GAP
                metrics.count(metrics.DELIVERED_WEBSOCKET, sent)
                if not must_read:
                    return
        finally:
            self.filling = False

    def stop(self) -> None:
        """The socket is gone: no store read goes on for it."""
        if self.fill_task is not None:
            self.fill_task.cancel()

    def _take(self, message: EncodedMessage) -> Verdict:
        entry = message.entry
        verdict = self.stream.judge(entry.queue, entry.seq, entry.topics)
        if verdict is Verdict.DELIVER:
            cursor = self.stream.advance(entry.queue, entry.seq)
            self.output.send_text(message.text_for(cursor), message.size)
        return verdict

    def _hold(self, message: EncodedMessage) -> None:
        if len(self.held) < MAX_HELD_MESSAGES:
            self.held.append(message)
        else:
            self.read_again = True  # the next store read brings them

    async def _fill_from_store(self) -> bool:
        """Deliver what the live path missed; False if the socket must close."""
        try:
            page = await self.stream.read_page(page_bytes())
            # Nothing past a loss is sent: its cursor would hide the loss from
            # the client's next resume (4409 says "resume: recovered false").
            lost = page.gap or await self._send_pages(page)
        except ServiceUnavailable as error:
            await self.output.unavailable(error)
            return False
        if lost:
            self.output.lost_messages()
            return False
        return True

    async def _send_pages(self, page: ReadResult) -> bool:
        """Send `page` and the pages after it; True, sending nothing more, at
        a later page with a gap."""
        while True:
            sent = 0
            for entry, after in page.picked:
                if self.output.ended:
                    break
                text = entry.text_for(after.encode()).decode()
                self.output.send_text(text, entry.text_size)
                sent += 1
            metrics.count(metrics.DELIVERED_WEBSOCKET, sent)
            if not page.has_more or self.output.ended:
                return False
            room = page_bytes()
            if not await self.output.wait_for_room(room, replay_patience()):
                if not self.output.ended:
                    self.output.slow_consumer()
                return False
            page = await self.stream.read_page(room)
            if page.gap:
                return True
