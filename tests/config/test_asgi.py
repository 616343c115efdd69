"""config.asgi loads the Redis client only when REDIS_URL asks for Redis.

The embedded default (no REDIS_URL: the in-memory store, cache and channel
layer) must not pay for the Redis client and channels-redis in memory and
start-up time; the import contract in pyproject.toml keeps direct imports out,
and these tests check the process as a whole: the ASGI application imported,
the services built, a request and a WebSocket handshake served. Each case runs
in a fresh interpreter, since this test process has long loaded everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT = 30

# What the child reports, as JSON: Redis modules loaded at each stage.
PROBE = """
import asyncio, json, sys

def loaded():
    redis_client = {"redis", "channels_redis"}
    return sorted(m for m in sys.modules if m.split(".")[0] in redis_client)

report = {}
import config.asgi
report["imported"] = loaded()

from sync.services import get_realtime_sync
sync = get_realtime_sync()
report["store"] = type(sync.store).__name__
report["services built"] = loaded()

if sys.argv[1] == "serve":
    from channels.testing import HttpCommunicator, WebsocketCommunicator

    async def serve():
        app, host = config.asgi.application, [(b"host", b"localhost")]
        http = HttpCommunicator(app, "GET", "/api/sync/status", headers=host)
        report["http status"] = (await http.get_response(timeout=5))["status"]
        socket = WebsocketCommunicator(app, "/ws", headers=host)
        await socket.connect(timeout=5)
        report["ws close"] = (await socket.receive_output(5)).get("code")
        await socket.disconnect()
        await sync.apublish("probe", {"n": 1}, user_id="1")
        report["stored"] = sync.store.read("1", since=0).count

    asyncio.run(serve())
    report["served"] = loaded()

print(json.dumps(report))
"""


def child_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without anything that configures the project, plus
    development mode, a throwaway database and `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SYNC_", "DJANGO_", "REDIS_", "PROMETHEUS_"))
        and name not in {"SECRET_KEY", "DATABASE_URL", "DEBUG", "PYTHONPATH"}
    }
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "development",
        # Nothing here should touch a database; if it does, not the repo's.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def probe(env: dict[str, str], mode: str) -> dict:
    """Run PROBE in a fresh interpreter at the project root; its report."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_redis_url_the_redis_client_is_never_loaded(tmp_path):
    env = child_environment(tmp_path)
    assert "REDIS_URL" not in env

    report = probe(env, "serve")

    assert report["store"] == "MemoryMessageStore"
    # The request, the handshake and the publish really went through.
    assert report["http status"] == 401
    assert report["ws close"] == 4401
    assert report["stored"] == 1
    for stage in ("imported", "services built", "served"):
        assert report[stage] == [], f"loaded once {stage}: {report[stage]}"


def test_with_redis_url_the_services_use_the_redis_client(tmp_path, redis_url):
    # Building the store touches no key; a prefix of its own all the same.
    prefix = f"test-asgi-{uuid.uuid4().hex[:8]}"
    env = child_environment(tmp_path, REDIS_URL=redis_url, SYNC_KEY_PREFIX=prefix)

    report = probe(env, "build")

    assert report["store"] == "RedisMessageStore"
    assert {"redis", "redis.asyncio"} <= set(report["services built"])


def test_a_blank_redis_url_counts_as_none(tmp_path):
    report = probe(child_environment(tmp_path, REDIS_URL=" "), "build")

    assert report["store"] == "MemoryMessageStore"
    assert report["services built"] == []
