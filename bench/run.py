"""``make bench``: the delivery and HTTP figures of issues 7 and 8, in one table.

    .venv/bin/python -m bench [--quick] [--server daphne|uvicorn]
                              [--cases 1,2,3,4,5,6] [--json FILE] [--keep-logs]

Every baseline (bare ``websockets``, python-socketio, a bare Django view) is
measured in the same run as the project, so ratios compare across machines.
Case 6 runs two instances on the Redis at REDIS_URL (bench/scaleout.py).
Cases and targets: see bench/cases.py, bench/scaleout.py and bench/targets.py.
Prints the table and the targets with PASS or MISS; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import report
from bench.cases import (
    QUICK,
    Bench,
    Plan,
    fan_out_case,
    idle_case,
    long_poll_case,
    per_user_case,
    short_poll_case,
)
from bench.report import Row
from bench.scaleout import redis_case
from bench.servers import ASGI_SERVERS, prepare_database, socketio_installed

CASES = {
    "1": "fan-out",
    "2": "per-user",
    "3": "short polls",
    "4": "long polls",
    "5": "idle sockets",
    "6": "Redis: fan-out and long polls on two instances",
}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1,000 sockets only, shorter runs (~3 min)"
    )
    parser.add_argument(
        "--server", choices=ASGI_SERVERS, help="measure the project on this server only"
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma list of case numbers (1-6)"
    )
    parser.add_argument("--json", type=Path, help="append one JSON row per table row")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep server and client logs"
    )
    options = parser.parse_args(argv)
    unknown = set(options.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; 1-6")
    return options


async def run_case(bench: Bench, number: str) -> list[Row]:
    """Run case `number` (see CASES)."""
    if number == "1":
        rows = []
        for sockets in bench.plan.fanout_sizes:
            rows += await fan_out_case(bench, sockets)
        return rows
    runners = {
        "2": per_user_case,
        "3": short_poll_case,
        "4": long_poll_case,
        "5": idle_case,
        "6": redis_case,
    }
    return await runners[number](bench)


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def say(text: str) -> None:
    """A progress line, at once."""
    print(text, flush=True)


async def measure(bench: Bench, cases: list[str]) -> list[Row]:
    """Run the cases in order; their rows."""
    rows: list[Row] = []
    for number in cases:
        started = time.monotonic()
        say(f"case {number}: {CASES[number]}")
        rows += await run_case(bench, number)
        say(f"  ({time.monotonic() - started:.0f} s)")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the table; 0 unless the bench itself failed."""
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    plan = QUICK if options.quick else Plan()
    servers = (options.server,) if options.server else ASGI_SERVERS
    cases = options.cases.split(",")
    info = report.machine()
    open_files = raise_open_files_limit()
    say(f"bench: {report.machine_line(info)}  open files {open_files}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.monotonic()
    try:
        say("preparing the database (migrate, users and tokens)")
        database = prepare_database(workdir, plan.per_user_users)
        bench = Bench(plan, database, workdir, servers, socketio_installed(), say)
        rows = asyncio.run(measure(bench, cases))
    finally:
        if not options.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(report.render_table(rows))
    print()
    print("Targets (issues 7 and 8; printed, not asserted):")
    print(report.render_targets(rows) or "  (none in the cases run)")
    print(f"\n{'quick' if options.quick else 'full'} run, {elapsed / 60:.1f} min")
    if options.keep_logs:
        print(f"logs kept in {workdir}")
    if options.json:
        settings = {"quick": options.quick, "servers": servers, "plan": asdict(plan)}
        report.append_json(options.json, rows, info, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
