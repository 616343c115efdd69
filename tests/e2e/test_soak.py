"""A short soak (SPEC §3-§5, issues 6 and 8): steady traffic, restless tabs, a
restart; on one instance, and on two instances sharing one Redis.

The engine and the checker are in ``harness/soak.py``; ``bench/soak.py``
runs the same for longer and prints a table. Counts are printed (``pytest -s``).
"""

from __future__ import annotations

import re
import uuid

import pytest
import redis

from harness.soak import SOAK_ENV, SoakConfig, run_soak
from tests.e2e.conftest import E2E_SERVERS

pytestmark = pytest.mark.e2e

# About 11 s of traffic, plus the catch-up: every restless tab drops and
# resumes several times, and every tab lives through the restart.
SHORT_RUN = SoakConfig(seconds=11.0, settle=3.0)
# Lines of the first process's log shown when something failed around it.
SHUTDOWN_LOG_LINES = 30
# The line each server writes when it starts (daphne, uvicorn).
SERVER_STARTED = re.compile(r"Starting server|Started server process")


def before_restart(log: str) -> str:
    """The last lines the server wrote before it was started again."""
    starts = [m.start() for m in SERVER_STARTED.finditer(log)]
    first_run = log[: log.rfind("\n", 0, starts[1])] if len(starts) > 1 else log
    return "\n".join(first_run.splitlines()[-SHUTDOWN_LOG_LINES:])


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


# Two instances on one Redis: tabs and publishers on either, at random.
TWO_INSTANCE_RUN = SoakConfig(seconds=12.0, settle=3.0, publishers=2)


@pytest.fixture
def soak_instances(request, redis_url, server_kind):
    """Instances A and B on one Redis, with the soak's environment.

    Run on the first server kind only: the cross-instance paths under test
    (the store, the subscription, the hub) are the same code on both, and a
    second run would double the suite's longest test.
    """
    if server_kind != E2E_SERVERS[0]:
        pytest.skip(f"the two-instance soak runs on {E2E_SERVERS[0]} only")
    prefix = f"sync-soak-{uuid.uuid4().hex[:12]}"
    env = {**SOAK_ENV, "REDIS_URL": redis_url, "SYNC_KEY_PREFIX": prefix}
    start = request.getfixturevalue("dedicated_asgi_server")
    yield start(**env), start(**env)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.mark.redis
async def test_two_instances_soak_loses_repeats_and_reorders_nothing(soak_instances):
    a, b = soak_instances
    report = await run_soak([a, b], TWO_INSTANCE_RUN)

    print("\n" + report.summary() + "\n" + report.table())
    assert sum(p.stored for p in report.publications) > TWO_INSTANCE_RUN.seconds * 10
    assert report.total("delivered") > 0
    # Violations include any announcement of loss (the store outlives A's
    # restart) and any socket closed with 1011 (Redis is up).
    assert report.violations == 0, (
        f"{report.summary()}\n{report.problems()}\n"
        f"A's log before its restart:\n{before_restart(a.log())}"
    )
