"""How to serve ``config.asgi:application`` with each supported ASGI server.

One place for the command lines, so ``make run``, the end-to-end tests and
the benchmarks run the servers exactly as the README recommends:

    python -m config.servers            # SERVER=uvicorn (default) or daphne

uvicorn is the default: on the same application it delivers about twice the
frames per second of daphne (README, Performance).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from sync.core.conf import DEFAULTS

SERVERS = ("uvicorn", "daphne")
DEFAULT_SERVER = "uvicorn"
APPLICATION = "config.asgi:application"
# Seconds uvicorn lets requests in flight finish after SIGTERM (long polls
# answer at once; daphne's grace period is the same, see daphne_compat).
GRACEFUL_SHUTDOWN_SECONDS = 5
# The frame size SPEC §5 allows (payload limit + envelope); one byte more is
# refused with 1009 by the server before the frame is even buffered whole.
FRAME_OVERHEAD_BYTES = 4096
DEFAULT_MAX_PAYLOAD_BYTES = 65536
# Seconds an idle kept-alive connection stays open (uvicorn's default, made
# explicit): nginx's upstream keepalive_timeout must stay below it.
KEEP_ALIVE_SECONDS = 5


def max_frame_bytes(env: Mapping[str, str]) -> int:
    """The largest WebSocket message the application accepts."""
    payload = env.get("SYNC_MAX_PAYLOAD_BYTES", "").strip()
    return int(payload or DEFAULT_MAX_PAYLOAD_BYTES) + FRAME_OVERHEAD_BYTES


def limit_concurrency(env: Mapping[str, str]) -> int:
    """uvicorn's --limit-concurrency, from SYNC_LIMIT_CONCURRENCY."""
    raw = env.get("SYNC_LIMIT_CONCURRENCY", "").strip()
    if not raw:
        return DEFAULTS["LIMIT_CONCURRENCY"]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"SYNC_LIMIT_CONCURRENCY must be an integer, got {raw!r}."
        ) from None


def server_command(
    kind: str,
    host: str,
    port: int | str,
    env: Mapping[str, str] = os.environ,
    application: str = APPLICATION,
) -> list[str]:
    """The argv that serves `application` with `kind` on `host`:`port`.

    `env` is the environment the server will run with (for its size limit);
    the benchmarks serve their baselines the same way.
    """
    if kind == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", application,
            "--host", host, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
            # Frames one byte over the limit reach the application, which
            # closes with 1009 itself; far larger ones uvicorn refuses first.
            "--ws-max-size", str(max_frame_bytes(env) + 1),
            # Compression would cost a zlib context per socket (tens of KiB)
            # and a deflate per socket per message, undoing encode-once.
            "--ws-per-message-deflate", "false",
            "--lifespan", "off",
            # The client address is the TCP peer, as with daphne: uvicorn
            # would otherwise take X-Forwarded-For from any local caller, and
            # a forged header would pass SYNC_METRICS_ALLOW and rate limits.
            "--no-proxy-headers",
            "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_SECONDS),
            "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS),
            # Past this many connections (sockets included) or tasks, HTTP
            # requests get 503; heads are bounded in sync.ops.uvicorn_limits.
            "--limit-concurrency", str(limit_concurrency(env)),
        ]  # fmt: skip
    if kind == "daphne":
        # daphne has no option for heads or concurrency: twisted's limits are
        # set in-process (sync.ops.daphne_limits).
        return [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            host,
            "-p",
            str(port),
            application,
        ]
    raise ValueError(f"SERVER must be one of {', '.join(SERVERS)}, got {kind!r}.")


def main() -> None:
    """Replace this process with the server the environment asks for."""
    kind = os.environ.get("SERVER", DEFAULT_SERVER).strip() or DEFAULT_SERVER
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "5000")
    try:
        argv = server_command(kind, host, port)
    except ValueError as error:
        sys.exit(str(error))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
