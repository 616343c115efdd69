"""Waiting for what a test expects, rather than sleeping for a guessed while."""

from __future__ import annotations

import asyncio


async def until(condition, timeout: float = 10) -> None:
    """Return once `condition()` holds; fail the test if it does not within
    `timeout` seconds. Checks every 10 ms, leaving the event loop free."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
