"""A redis-server of the test's own, to crash and restart (issue 8, faults).

Production runs Redis with append-only persistence fsynced on every write
(``--appendonly yes --appendfsync always``): whatever Redis acknowledged is
on disk, so a crash and a restart on the same directory reload it. The
helper runs that, or a Redis without any persistence (``persistent=False``),
which comes back empty. ``crash`` is SIGKILL: no chance to save anything on
the way out, as a power cut or an OOM kill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from harness.live_server import HOST, free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """redis-server's path; skip (or fail where CI requires Redis) without one."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("SYNC_REQUIRE_REDIS") == "1":
            pytest.fail(f"SYNC_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return found


@dataclass
class RedisServer:
    """One redis-server on a fixed port and directory, started and crashed at will."""

    directory: Path
    persistent: bool = True
    binary: str = field(default_factory=redis_server_binary)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "no"]
        if self.persistent:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            self.binary, "--port", str(self.port), "--bind", HOST,
            "--dir", str(self.directory), "--save", "", *persistence,
        ]  # fmt: skip

    def start(self) -> None:
        """Start (again, on the same port and directory); wait until it answers."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        probe = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited:\n{self.log()}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if probe.ping():
                    probe.close()
                    return
            time.sleep(0.05)
        pytest.fail(f"redis-server did not answer in {START_TIMEOUT} s:\n{self.log()}")

    def crash(self) -> None:
        """SIGKILL: Redis keeps only what it had already written to disk."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (used when the test ends)."""
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            self.process.wait(STOP_TIMEOUT)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""
