"""The Prometheus series of SPEC §7 (sync/core/metrics.py): the named series,
figures that follow the traffic of each transport, and figures summed over
several worker processes. Who may read them: tests/sync/ops/test_metrics_view.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from sync.core import metrics
from sync.services import get_realtime_sync, reset_services
from sync.store.memory import MemoryMessageStore
from sync.store.redis import RedisMessageStore
from sync.ws.outbox import Outbox
from tests.sync.waiting import until

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SERIES = {
    "sync_connections": "gauge",
    "sync_waiting_polls": "gauge",
    "sync_messages_published": "counter",
    "sync_messages_delivered": "counter",
    "sync_messages_dropped": "counter",
    "sync_poll_requests": "counter",
    "sync_delivery_latency_seconds": "histogram",
}
PUBLISHED_USER = ("sync_messages_published_total", (("kind", "user"),))
PUBLISHED_BROADCAST = ("sync_messages_published_total", (("kind", "broadcast"),))
DELIVERED_WS = ("sync_messages_delivered_total", (("transport", "websocket"),))
DELIVERED_POLLING = ("sync_messages_delivered_total", (("transport", "polling"),))
POLL_REQUESTS = ("sync_poll_requests_total", ())
LATENCY_COUNT = ("sync_delivery_latency_seconds_count", ())
CONNECTIONS = ("sync_connections", ())


@pytest.fixture(params=["memory", "redis"])
def each_store(request, clock):
    """Each backend in turn as the service's store (Redis under its own prefix)."""
    if request.param == "memory":
        reset_services(MemoryMessageStore(clock=clock))
        yield get_realtime_sync().store
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test:metrics:{uuid.uuid4().hex}:"
    store = RedisMessageStore(url, prefix=prefix, clock=clock)
    reset_services(store)
    yield store
    store.close()
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def dropped(reason: str) -> tuple[str, tuple]:
    return ("sync_messages_dropped_total", (("reason", reason),))


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def figures() -> dict[tuple[str, tuple], float]:
    """What /metrics would show now."""
    body, _ = metrics.exposition()
    return parse(body.decode())


def moved(before: dict, after: dict, key: tuple) -> float:
    return after.get(key, 0) - before.get(key, 0)


async def next_frame(ws) -> dict:
    return await ws.receive_json_from(2)


# The series -------------------------------------------------------------------


def test_metrics_serves_every_named_series_in_the_prometheus_format(staff_client):
    response = staff_client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(response.content.decode())
    }
    assert {name: families.get(name) for name in SERIES} == SERIES
    samples = parse(response.content.decode())
    # Labelled series show before any traffic, at their current figure.
    for key in (DELIVERED_WS, DELIVERED_POLLING, PUBLISHED_USER, PUBLISHED_BROADCAST):
        assert key in samples
    for reason in ("expired", "overflow", "store_max_bytes", "slow_consumer"):
        assert dropped(reason) in samples


# Figures follow the traffic ---------------------------------------------------


async def test_a_websocket_delivery_moves_published_delivered_and_latency(
    ws_connect, user
):
    before_open = figures()
    ws, _ = await ws_connect(user)
    before = figures()

    await get_realtime_sync().apublish("notification.new", {"n": 1}, user.pk)
    frame = await next_frame(ws)
    after = figures()

    assert frame["payload"] == {"n": 1}
    assert moved(before_open, before, CONNECTIONS) == 1
    assert moved(before, after, PUBLISHED_USER) == 1
    assert moved(before, after, DELIVERED_WS) == 1
    assert moved(before, after, LATENCY_COUNT) == 1
    assert moved(before, after, DELIVERED_POLLING) == 0
    await ws.disconnect()
    await until(lambda: moved(before_open, figures(), CONNECTIONS) == 0)
    assert moved(before_open, figures(), CONNECTIONS) == 0


async def test_a_broadcast_counts_each_socket_but_one_latency_sample(
    ws_connect, user, other_user
):
    first, _ = await ws_connect(user)
    second, _ = await ws_connect(other_user)
    before = figures()

    await get_realtime_sync().abroadcast("announcement", {"n": 2})
    frames = [await next_frame(first), await next_frame(second)]
    after = figures()

    assert [frame["type"] for frame in frames] == ["announcement", "announcement"]
    assert moved(before, after, PUBLISHED_BROADCAST) == 1
    assert moved(before, after, DELIVERED_WS) == 2
    assert moved(before, after, LATENCY_COUNT) == 1


async def test_a_topic_broadcast_counts_only_the_sockets_that_follow_it(
    ws_connect, user, other_user
):
    follower, _ = await ws_connect(user, query="topics=ops")
    bystander, _ = await ws_connect(other_user)
    before = figures()

    await get_realtime_sync().abroadcast("announcement", {"n": 3}, topics=["ops"])
    frame = await next_frame(follower)
    await get_realtime_sync().apublish("notification.new", {"n": 4}, other_user.pk)
    bystander_frame = await next_frame(bystander)

    assert frame["payload"] == {"n": 3}
    assert bystander_frame["payload"] == {"n": 4}  # the broadcast skipped it
    assert moved(before, figures(), DELIVERED_WS) == 1 + 1


async def test_a_replay_on_resume_counts_as_websocket_delivery(ws_connect, user):
    sync = get_realtime_sync()
    first = await sync.apublish("notification.new", {"n": 1}, user.pk)
    await sync.apublish("notification.new", {"n": 2}, user.pk)
    before = figures()

    ws, established = await ws_connect(user, query=f"cursor={first['cursor']}")
    replayed = await next_frame(ws)

    assert established["payload"]["recovered"] is True
    assert replayed["payload"] == {"n": 2}
    assert moved(before, figures(), DELIVERED_WS) == 1


def test_a_poll_moves_poll_requests_and_polling_deliveries(api_client, user):
    sync = get_realtime_sync()
    sync.publish("notification.new", {"n": 1}, user.pk)
    sync.publish("notification.new", {"n": 2}, user.pk)
    before = figures()

    page = api_client.get("/api/sync/poll?since=0").json()
    empty = api_client.get(f"/api/sync/poll?cursor={page['cursor']}").json()
    after = figures()

    assert page["count"] == 2
    assert empty["count"] == 0
    assert moved(before, after, POLL_REQUESTS) == 2
    assert moved(before, after, DELIVERED_POLLING) == 2
    assert moved(before, after, DELIVERED_WS) == 0


# Drops, by reason ---------------------------------------------------------------


def test_queue_overflow_counts_as_dropped_overflow(each_store, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=2)
    before = figures()

    for number in range(5):
        get_realtime_sync().publish("notification.new", {"n": number}, "7")

    assert moved(before, figures(), dropped("overflow")) == 3
    assert each_store.stats().total_messages == 2


def test_expired_messages_count_once_as_dropped_expired(each_store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    for number in range(3):
        get_realtime_sync().publish("notification.new", {"n": number}, "7")
    get_realtime_sync().broadcast("announcement", {"n": 4})
    before = figures()

    clock.advance(11)
    page = each_store.read("7", since=0)  # a read drops what it finds expired
    swept = each_store.purge_expired()  # nothing left to drop

    assert page.parse_messages() == []
    assert swept == 0
    assert moved(before, figures(), dropped("expired")) == 4


def test_store_max_bytes_evictions_count_as_dropped_store_max_bytes(
    store, sync_config, user
):
    sync_config(STORE_MAX_BYTES=20_000)
    before = figures()

    for number in range(20):
        get_realtime_sync().publish("notification.new", {"x": "y" * 2000}, number)

    evicted = moved(before, figures(), dropped("store_max_bytes"))
    assert 0 < evicted < 20
    assert store.stats().total_messages == 20 - evicted


async def test_a_slow_consumer_counts_the_frames_its_outbox_dropped():
    never_done = asyncio.get_running_loop().create_future()

    async def stuck_send(message):
        await never_done  # the client stopped reading

    outbox = Outbox(stuck_send, limit=100)
    before = figures()
    outbox.put_text("a" * 40)  # written, and stuck
    outbox.put_text("b" * 40)  # queued
    outbox.put_text("c" * 40)  # queued
    accepted = outbox.put_text("d" * 40)  # over the bound: 4413

    assert accepted is False
    assert moved(before, figures(), dropped("slow_consumer")) == 2 + 1
    outbox.stop()


# Several worker processes ---------------------------------------------------------

WORKER = """
import os, sys
from sync.core import metrics
opened, published = int(sys.argv[1]), int(sys.argv[2])
for _ in range(opened):
    metrics.connections.inc()
metrics.PUBLISHED_USER.inc(published)
metrics.DELIVERED_POLLING.inc(published)
if sys.argv[3] == "shut down":
    metrics.mark_this_process_dead()
"""
SCRAPE = """
import sys
from sync.core import metrics
sys.stdout.write(metrics.exposition()[0].decode())
"""


def run_python(code: str, directory: Path, *args: str) -> str:
    env = {**os.environ, metrics.MULTIPROC_DIR_VARIABLE: str(directory)}
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_several_processes_add_up_and_a_gone_one_leaves_the_gauge(tmp_path):
    # A live worker: a waiting child stands in, its pid alive all along.
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        run_python(WORKER, tmp_path, "2", "3", "keep")
        # The worker above has exited without shutting down (a crash): its
        # gauge file names a dead pid. Rename it to the live pid's.
        [crashed] = tmp_path.glob("gauge_livesum_*.db")
        crashed.rename(tmp_path / f"gauge_livesum_{live.pid}.db")
        run_python(WORKER, tmp_path, "5", "4", "keep")  # crashed: dead pid
        run_python(WORKER, tmp_path, "7", "1", "shut down")  # clean shutdown

        samples = parse(run_python(SCRAPE, tmp_path))
    finally:
        live.communicate(b"")

    # Counters: every process that ever counted, dead or alive.
    assert samples[PUBLISHED_USER] == 3 + 4 + 1
    assert samples[DELIVERED_POLLING] == 3 + 4 + 1
    # The gauge: live processes only (the crashed and the shut-down are out).
    assert samples[CONNECTIONS] == 2
