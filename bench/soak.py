"""A long soak of a real daphne process: steady traffic, restless tabs, a restart.

    .venv/bin/python -m bench.soak --seconds 120

The same engine and checker as ``tests/e2e/test_soak.py`` (see
``tests/support/soak.py``), run for longer. Prints a table per tab and the
violations found; exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from config.servers import DEFAULT_SERVER, SERVERS
from tests.support.live_server import prepare_template_database, start_server
from tests.support.soak import SOAK_ENV, SoakConfig, SoakReport, run_soak


def parse_arguments(argv: list[str]) -> tuple[SoakConfig, str]:
    """The soak's configuration from the command line."""
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--tabs", type=int, default=defaults.tabs)
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--restart-at", type=float, default=defaults.restart_at)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    options = parser.parse_args(argv)
    config = SoakConfig(
        seconds=options.seconds,
        tabs=options.tabs,
        rate=options.rate,
        restart_at=options.restart_at,
        seed=options.seed,
    )
    return config, options.server


async def soak(
    config: SoakConfig, directory: Path, kind: str
) -> tuple[SoakReport, str]:
    """Start a server in `directory`, soak it, stop it; the report and its log."""
    (directory / "template").mkdir()
    (directory / "server").mkdir()
    template = prepare_template_database(directory / "template")
    server = start_server(template, directory / "server", SOAK_ENV, kind)
    try:
        report = await run_soak(server, config)
    finally:
        server.stop()
    return report, server.log()


def main(argv: list[str]) -> int:
    config, kind = parse_arguments(argv)
    print(
        f"soak: {config.seconds:.0f} s, {config.tabs} tabs, {config.rate:.0f} "
        f"messages/s, SIGTERM and restart at {config.restart_at:.0%}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        report, _ = asyncio.run(soak(config, Path(directory), kind))
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
