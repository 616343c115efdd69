"""Case 6: the project as two instances on one Redis, clients split between them.

- Fan-out to 1,000 sockets, 500 on each instance, every broadcast sent
  through the first: paced, then a burst. Bare ``websockets`` is measured in
  the same case, just before, as the baseline of its ratio.
- 1,000 long polls, 500 on each instance, woken by one broadcast sent
  through the first.

Each cluster gets a Redis key prefix of its own under this run's, and every
key under it is deleted at the end. Without a Redis answering at REDIS_URL
(default: the tests' ``redis://127.0.0.1:6379/15``) the case says so and
the others run.
"""

from __future__ import annotations

import asyncio
import itertools

from bench import targets
from bench.cases import (
    Bench,
    FanOutTarget,
    bare_websockets_target,
    compare_to_bare,
    fan_out_all,
    join,
    long_poll_env,
    long_poll_label,
    long_poll_row,
    on_each_server,
    project_target,
    wake_long_polls,
)
from bench.redis_tools import bench_redis_url, key_prefix, redis_answers
from bench.report import Row
from bench.servers import start_cluster

LABEL = "6 Redis"
SYSTEM = "project x2"
INSTANCES = 2
SOCKETS = 1000  # the figure; both plans fan out to 1,000


class Instances:
    """Settings of each cluster this case starts: one Redis, a prefix each."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.numbers = itertools.count()

    def env(self, **extra: str) -> dict[str, str]:
        """REDIS_URL, a key prefix no other cluster uses, and `extra`."""
        prefix = f"{self.prefix}-{next(self.numbers)}"
        return {"REDIS_URL": self.url, "SYNC_KEY_PREFIX": prefix, **extra}


async def redis_case(bench: Bench) -> list[Row]:
    """Fan-out and long polls on two instances, or why not."""
    url = bench_redis_url()
    if not await asyncio.to_thread(redis_answers, url):
        bench.progress(f"  skipped: no Redis at {url}")
        return [Row(LABEL, "-", SYSTEM, notes=f"skipped: no Redis at {url}")]
    with key_prefix(url, "case6") as prefix:
        instances = Instances(url, prefix)
        rows = await fan_out_on_redis(bench, instances)
        rows += await on_each_server(
            bench,
            "long polls",
            long_poll_label(bench.plan, LABEL),
            lambda kind: long_polls_on_redis(bench, kind, instances),
            SYSTEM,
        )
    return rows


def cluster_target(bench: Bench, kind: str, instances: Instances) -> FanOutTarget:
    """Two instances of the project on `kind`, sharing one Redis."""
    return project_target(
        bench,
        SYSTEM,
        kind,
        lambda: start_cluster(
            kind,
            bench.database,
            bench.folder(f"cluster-{kind}"),
            instances.env(),
            INSTANCES,
        ),
    )


async def fan_out_on_redis(bench: Bench, instances: Instances) -> list[Row]:
    """Bare websockets, then a cluster on each server; shares and targets."""
    systems = [bare_websockets_target(bench)]
    systems += [cluster_target(bench, kind, instances) for kind in bench.servers]
    paced, burst = await fan_out_all(bench, systems, SOCKETS, LABEL)
    for rows in (paced, burst):
        bare = compare_to_bare(rows, paced=rows is paced)
        for row in rows:
            if row.system != SYSTEM:
                continue
            row.notes = join(split_note(), row.notes)
            if rows is burst:
                row.targets = targets.redis_burst(row, bare)
    return paced + burst


def split_note() -> str:
    """How the clients and the publishes were spread."""
    each = SOCKETS // INSTANCES
    return f"{each} sockets on each of {INSTANCES} instances, sent through one"


async def long_polls_on_redis(bench: Bench, kind: str, instances: Instances) -> Row:
    """The long-poll case over two instances on `kind`."""
    plan = bench.plan
    folder = bench.folder(f"cluster-long-polls-{kind}")
    env = instances.env(**long_poll_env(plan))
    woken = await wake_long_polls(
        bench,
        lambda: start_cluster(kind, bench.database, folder, env, INSTANCES),
        folder,
    )
    label = long_poll_label(plan, LABEL)
    row = long_poll_row(label, kind, SYSTEM, plan.long_polls, woken)
    each = plan.long_polls // INSTANCES
    row.notes += f"; {each} on each of {INSTANCES} instances"
    row.targets = targets.redis_long_polls(row, row.lost == 0)
    return row
