"""A long soak of a real server: steady traffic, restless tabs, a restart.

    .venv/bin/python -m bench.soak --seconds 120
    .venv/bin/python -m bench.soak --seconds 120 --instances 2

With ``--instances 2`` two server processes share one Redis (``--redis-url``,
under a key prefix of the run's own, deleted afterwards); tabs and two
publishers use either at random, and the first one is restarted.

The same engine and checker as ``tests/e2e/test_soak.py`` (see
``harness/soak.py``), run for longer. Prints a table per tab and the
violations found; exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from config.servers import DEFAULT_SERVER, SERVERS
from harness.live_server import (
    LiveServer,
    TemplateDatabase,
    prepare_template_database,
    start_server,
)
from harness.soak import SOAK_ENV, SoakConfig, SoakReport, run_soak

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def parse_arguments(argv: list[str]) -> tuple[SoakConfig, argparse.Namespace]:
    """The soak's configuration from the command line."""
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--tabs", type=int, default=defaults.tabs)
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--restart-at", type=float, default=defaults.restart_at)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--instances", type=int, choices=(1, 2), default=1)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    options = parser.parse_args(argv)
    config = SoakConfig(
        seconds=options.seconds,
        tabs=options.tabs,
        rate=options.rate,
        restart_at=options.restart_at,
        seed=options.seed,
        publishers=options.instances,
    )
    return config, options


async def soak(
    config: SoakConfig, directory: Path, options: argparse.Namespace
) -> SoakReport:
    """Start the servers in `directory`, soak them, stop them; the report."""
    (directory / "template").mkdir()
    template = prepare_template_database(directory / "template")
    with shared_redis(options) as env:
        servers = [
            start_in(template, directory / f"server{n}", env, options.server)
            for n in range(options.instances)
        ]
        try:
            return await run_soak(servers, config)
        finally:
            for server in servers:
                server.stop()


def start_in(
    template: TemplateDatabase, directory: Path, env: dict[str, str], kind: str
) -> LiveServer:
    directory.mkdir()
    return start_server(template, directory, env, kind)


@contextlib.contextmanager
def shared_redis(options: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The servers' environment: one Redis and a prefix of this run's own."""
    if options.instances == 1:
        yield SOAK_ENV
        return
    prefix = f"sync-soak-{uuid.uuid4().hex[:12]}"
    yield {**SOAK_ENV, "REDIS_URL": options.redis_url, "SYNC_KEY_PREFIX": prefix}
    client = redis.Redis.from_url(options.redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def main(argv: list[str]) -> int:
    config, options = parse_arguments(argv)
    print(
        f"soak: {config.seconds:.0f} s, {config.tabs} tabs, {config.rate:.0f} "
        f"messages/s, {options.instances} instance(s) of {options.server}, "
        f"SIGTERM and restart at {config.restart_at:.0%}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        report = asyncio.run(soak(config, Path(directory), options))
    print(report.table())
    print(report.summary())
    for restart in report.restarts:
        print(
            f"restart: exit status {restart.exit_status}, listening again after "
            f"{restart.listening_at - restart.signalled_at:.2f} s"
        )
    if report.violations:
        print(f"\n{report.violations} violations, for example:\n{report.problems()}")
        return 1
    print("no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
