"""Redis for the bench: where it is, whether it answers, keys of our own.

The Redis cases share a Redis with whatever else uses it (tests use db 15
too), so every key they make starts with a prefix of their own, deleted
afterwards. The channel-layer measurement counts Redis commands, which only
means something on a Redis nobody else talks to: it starts its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import redis

from bench.servers import HOST, ServerFailed, free_port

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
PING_TIMEOUT = 1.0
START_TIMEOUT = 10.0


def bench_redis_url() -> str:
    """REDIS_URL from the environment, else the tests' default database."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def redis_answers(url: str) -> bool:
    """Whether a Redis at `url` answers a PING within a second."""
    client = redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def key_prefix(url: str, name: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted on the way out."""
    prefix = f"bench-{name}-{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        delete_keys(url, prefix)


def delete_keys(url: str, prefix: str) -> int:
    """Delete every key starting with `prefix`; how many there were."""
    client = redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerFailed("redis-server is not installed")
        port = free_port()
        self.url = f"redis://{HOST}:{port}/0"
        self.command = [binary, "--port", str(port), "--bind", HOST, "--save", ""]
        self.command += ["--appendonly", "no", "--loglevel", "warning"]
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_redis(self.url, process)
        return process

    def restart(self) -> None:
        """Stop it and start it again on the same port (everything is lost)."""
        self.stop()
        self.process = self._start()

    def stop(self) -> None:
        """Stop our redis-server by its pid."""
        self.process.terminate()
        self.process.wait(START_TIMEOUT)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of our own for the duration of the block."""
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.stop()


def wait_for_redis(url: str, process: subprocess.Popen) -> None:
    """Return once the Redis at `url` answers; fail if `process` died."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"redis-server exited with {process.returncode}")
        if redis_answers(url):
            return
        time.sleep(0.05)
    raise ServerFailed(f"redis-server at {url} did not answer in time")
