"""Polling reads, including long polls that wait on the event loop."""

from __future__ import annotations

import asyncio

from sync.query_params import PollQuery
from sync.services.message_queue import MessageStore, ReadResult


async def poll(store: MessageStore, user_id: str, query: PollQuery) -> ReadResult:
    """Read the caller's page; if empty, wait up to `query.wait` for one.

    Each wake-up re-reads from the original position, so the answer is the
    same page a plain poll would give at that moment.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.wait
    while True:
        result = await store.aread(
            user_id,
            since=query.since,
            cursor=query.cursor,
            topics=query.topics,
            limit=query.limit,
        )
        remaining = deadline - loop.time()
        if result.messages or result.gap or remaining <= 0:
            return result
        await store.wait_for_messages(user_id, result.position, remaining)
