"""One Redis for the store: its clients, its Lua scripts, and how they are run.

Every change to the store happens inside a script from ``sync/store/lua/``
(each with the shared helpers of ``common.lua`` in front: Redis has no
includes), so instances never interleave halfway. A sync client serves
threads (views, commands); each event loop gets an asyncio client of its
own, since an asyncio connection belongs to the loop that opened it.
Failures to serve become ``StoreUnavailable`` (``sync.store.failures``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import NEVER_DECODE
from redis.retry import Retry

from sync.store.failures import unavailable_when_down

LUA_DIR = Path(__file__).with_name("lua")
SCRIPTS = ("append", "read", "head", "purge", "purge_queues", "stats")
# Store commands never block server-side, so a reply slower than this means
# Redis is in trouble: answer 503 rather than hold the request.
SOCKET_TIMEOUT_SECONDS = 2.0
SOCKET_CONNECT_TIMEOUT_SECONDS = 1.0
# Idle pooled connections are pinged before reuse after this long, so a
# Redis restart costs a reconnect instead of an error.
HEALTH_CHECK_INTERVAL_SECONDS = 15
# One retry, soon after: enough to replace a pooled connection that died
# with a restarted Redis, short enough to answer 503 fast while Redis is
# down. Safe for appends too: append.lua is idempotent by message id.
RETRIES = 1
RETRY_BACKOFF = ExponentialWithJitterBackoff(cap=0.2, base=0.05)
# Connections one event loop holds at most. One broadcast wakes every long
# poll and every socket with a hole to fill at the same moment: past this
# many, a command waits for a free connection (up to POOL_WAIT_SECONDS)
# instead of failing, as redis-py's default pool of 100 does (503 or 1011).
ASYNC_POOL_CONNECTIONS = 50
POOL_WAIT_SECONDS = 5.0


def script_source(name: str) -> str:
    """A script with the shared helpers in front (Redis has no includes)."""
    common = (LUA_DIR / "common.lua").read_text()
    return common + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def client_options(decode: bool = True) -> dict[str, Any]:
    """Timeouts and health checks every client of the store uses."""
    return {
        "decode_responses": decode,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
    }


class SharedCalls:
    """Identical reads asked for in one turn of the event loop share one
    round trip.

    One broadcast wakes every long poll and socket of this process at once,
    most of them asking the same thing (the head of one user, the same page).
    The call is sent at the next turn, after every caller of this turn
    joined, so its answer is as fresh as each of them needs; a caller of a
    later turn starts a new one.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[Any, ...], asyncio.Task] = {}

    async def run(self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]):
        """`call()`'s answer, shared with the callers of this turn asking `key`."""
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._send(key, call))
            task.add_done_callback(_retrieve)
            self._pending[key] = task
        return await asyncio.shield(task)  # one caller leaving stops no other

    async def _send(self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]):
        del self._pending[key]  # from now on, callers need a fresher answer
        return await call()


def _retrieve(task: asyncio.Task) -> None:
    """Mark a shared call's error as seen: each caller got it already."""
    if not task.cancelled():
        task.exception()


class RedisConnection:
    """The store's Redis at `url`, its keys under `prefix`."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, retry=Retry(RETRY_BACKOFF, RETRIES), **client_options()
        )
        self.sources = {name: script_source(name) for name in SCRIPTS}
        self.scripts = {
            name: self.client.register_script(source)
            for name, source in self.sources.items()
        }
        # One asyncio client per thread, for the loop that thread runs now.
        self._local = threading.local()

    def run(self, name: str, *args: Any) -> Any:
        """Run script `name` from a thread; its reply decoded."""
        with unavailable_when_down():
            return self.scripts[name](args=[self.prefix, *args])

    def run_raw(self, name: str, *args: Any) -> Any:
        """`run`, its reply left as bytes (message text is never decoded)."""
        values = [self.prefix, *args]
        raw = {NEVER_DECODE: []}
        with unavailable_when_down():
            try:
                return self.client.execute_command(
                    "EVALSHA", self.scripts[name].sha, 0, *values, **raw
                )
            except redis.exceptions.NoScriptError:
                return self.client.execute_command(
                    "EVAL", self.sources[name], 0, *values, **raw
                )

    async def arun(self, name: str, *args: Any, raw: bool = False) -> Any:
        """Run a script on this loop's client; `raw`: leave its reply as bytes."""
        client = self.async_client()
        values = [self.prefix, *args]
        options = {NEVER_DECODE: []} if raw else {}
        with unavailable_when_down():
            try:
                sha = self.scripts[name].sha
                return await client.execute_command(
                    "EVALSHA", sha, 0, *values, **options
                )
            except redis.exceptions.NoScriptError:
                return await client.execute_command(
                    "EVAL", self.sources[name], 0, *values, **options
                )

    async def arun_shared(
        self, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Await `call()`, shared with this turn's callers asking the same `key`."""
        self.async_client()  # this loop's client and shared calls
        return await self._local.shared.run(key, call)

    def async_client(self) -> redis.asyncio.Redis:
        """This event loop's client (made on the loop's first call)."""
        loop = asyncio.get_running_loop()
        if getattr(self._local, "loop", None) is not loop:
            # Only one client per thread is kept: an older loop's is dropped.
            self._local.loop = loop
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=ASYNC_POOL_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                retry=AsyncRetry(RETRY_BACKOFF, RETRIES),
                **client_options(),
            )
            self._local.client = redis.asyncio.Redis.from_pool(pool)
            self._local.shared = SharedCalls()
        return self._local.client

    async def aclose(self) -> None:
        """Close this loop's connections (tests)."""
        client = getattr(self._local, "client", None)
        if client is not None and self._local.loop is asyncio.get_running_loop():
            await client.aclose()
            self._local.loop = self._local.client = None
