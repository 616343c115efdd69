"""A short soak (SPEC §3-§5, issue 6): steady traffic, restless tabs, a restart.

The engine and the checker are in ``tests/support/soak.py``; ``bench/soak.py``
runs the same for longer and prints a table. Counts are printed (``pytest -s``).
"""

from __future__ import annotations

import pytest

from tests.support.soak import SOAK_ENV, SoakConfig, run_soak

pytestmark = pytest.mark.e2e

# About 20 s of traffic, plus the catch-up: every restless tab drops and
# resumes several times, and every tab lives through the restart.
SHORT_RUN = SoakConfig(seconds=16.0, settle=3.0)
# Lines of the first process's log shown when something failed around it.
SHUTDOWN_LOG_LINES = 30


def before_restart(log: str) -> str:
    """The last lines the server wrote before it was started again."""
    first_run = log.split("Starting server", 2)[:2]
    lines = "Starting server".join(first_run).splitlines()
    return "\n".join(lines[-SHUTDOWN_LOG_LINES:])


async def test_soak_loses_repeats_and_reorders_nothing_unannounced(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(**SOAK_ENV)
    report = await run_soak(server, SHORT_RUN)

    print("\n" + report.summary() + "\n" + report.table())
    assert sum(p.stored for p in report.publications) > SHORT_RUN.seconds * 10
    assert report.total("delivered") > 0
    assert report.violations == 0, (
        f"{report.summary()}\n{report.problems()}\n"
        f"server log before the restart:\n{before_restart(server.log())}"
    )
