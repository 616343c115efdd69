"""What only the Redis store does (sync/store/redis.py): instances sharing one
history, an unreachable Redis, idempotent appends, a restarted Redis, reads
bounded in bytes, its byte budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import redis

from sync.core.exceptions import StoreUnavailable
from sync.services import reset_services
from sync.store.cursors import Position, decode_cursor
from sync.store.redis import RedisMessageStore
from tests.conftest import closed_port
from tests.sync.store.messages import (
    broadcast_message,
    numbers,
    sized_message,
    user_message,
)


def test_paging_by_cursor_under_publishing_from_two_instances(redis_store, twin_store):
    instances, per_thread = (redis_store, twin_store), 150

    def publish(thread_number: int) -> None:
        instance = instances[thread_number % 2]
        for number in range(per_thread):
            value = thread_number * 1000 + number
            message = user_message("1", value)
            if number % 4 == 0:
                message = broadcast_message(value)
            instance.add_message(message)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    seen_by_cursor, seen_by_since, cursor, since = [], [], None, 0
    while True:
        finished = not any(thread.is_alive() for thread in threads)
        page = instances[len(seen_by_cursor) % 2].read("1", cursor=cursor, limit=40)
        seen_by_cursor += numbers(page.parse_messages())
        cursor = page.position
        by_since = instances[len(seen_by_since) % 2].read("1", since=since, limit=40)
        seen_by_since += numbers(by_since.parse_messages())
        since = by_since.timestamp
        if finished and not page.has_more and not by_since.has_more:
            break

    expected = sorted(n * 1000 + i for n in range(4) for i in range(per_thread))
    for seen in (seen_by_cursor, seen_by_since):
        assert sorted(seen) == expected  # all of them, none twice
        for n in range(4):
            own = [value for value in seen if value // 1000 == n]
            assert own == sorted(own)  # each publisher's order kept


def test_two_instances_share_one_history_and_its_cursors(redis_store, twin_store):
    redis_store.add_message(user_message("1", 1))
    twin_store.add_message(broadcast_message(2))
    redis_store.add_message(user_message("1", 3))

    on_first = redis_store.read("1", since=0).parse_messages()
    on_second = twin_store.read("1", since=0).parse_messages()
    resumed = twin_store.read("1", cursor=decode_cursor(on_first[0]["cursor"]))

    assert on_first == on_second
    assert numbers(on_first) == [1, 2, 3]
    assert numbers(resumed.parse_messages()) == [2, 3]
    assert not resumed.gap
    assert redis_store.epoch == twin_store.epoch
    assert redis_store.head("1") == twin_store.head("1")
    assert twin_store.stats().total_messages == 3


def test_one_epoch_per_prefix_whichever_instance_made_it(
    redis_url, redis_store, twin_store, clock
):
    first = redis_store.head("1").epoch
    other_prefix = f"test:store:{uuid.uuid4().hex}:"
    elsewhere = RedisMessageStore(redis_url, prefix=other_prefix, clock=clock)
    try:
        assert twin_store.head("1").epoch == first
        assert elsewhere.head("1").epoch != first
    finally:
        client = redis.Redis.from_url(redis_url)
        client.delete(*client.keys(f"{other_prefix}*"))


def test_a_cursor_of_a_wiped_redis_is_a_gap(redis_url, redis_store, redis_prefix):
    redis_store.add_message(user_message("1", 1))
    cursor = redis_store.read("1", since=0).position
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{redis_prefix}*"):
        client.delete(key)  # what a restart without persistence does
    redis_store.add_message(user_message("1", 2))

    result = redis_store.read("1", cursor=cursor)

    assert numbers(result.parse_messages()) == [2]
    assert result.gap
    assert result.position.epoch != cursor.epoch


async def test_hundreds_of_reads_at_once_all_answer(redis_store, twin_store):
    """One broadcast wakes every long poll and socket of a process together."""
    await twin_store.aadd_message(broadcast_message(1))

    pages = await asyncio.gather(
        *(redis_store.aread(str(user), since=0) for user in range(300)),
        *(redis_store.aread("1", since=0) for _ in range(300)),
    )
    heads = await asyncio.gather(*(redis_store.ahead("1") for _ in range(300)))

    assert all(numbers(page.parse_messages()) == [1] for page in pages)
    assert set(heads) == {pages[-1].position}


async def test_a_read_after_a_publish_sees_it_while_others_read(
    redis_store, twin_store
):
    readers = [asyncio.create_task(redis_store.aread("1", since=0)) for _ in range(50)]
    await twin_store.aadd_message(user_message("1", 1))

    after = await redis_store.aread("1", since=0)

    assert numbers(after.parse_messages()) == [1]
    for page in await asyncio.gather(*readers):
        assert numbers(page.parse_messages()) in ([], [1])


def test_an_unreachable_redis_raises_store_unavailable(clock):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    store = RedisMessageStore(url, prefix="unreachable:", clock=clock)

    with pytest.raises(StoreUnavailable) as raised:
        store.add_message(user_message("1", 1))
    for call in (lambda: store.read("1", since=0), store.stats):
        with pytest.raises(StoreUnavailable):
            call()
    assert raised.value.status_code == 503
    assert raised.value.code == "store_unavailable"


async def test_an_unreachable_redis_raises_store_unavailable_async(clock):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    store = RedisMessageStore(url, prefix="unreachable:", clock=clock)

    with pytest.raises(StoreUnavailable):
        await store.aadd_message(user_message("1", 1))
    with pytest.raises(StoreUnavailable):
        await store.aread("1", since=0)


def test_send_then_poll_through_the_api_on_the_redis_store(api_client, redis_store):
    reset_services(redis_store)

    sent = api_client.post(
        "/api/sync/send", {"type": "item.added", "payload": {"n": 1}}, format="json"
    )
    body = api_client.get("/api/sync/poll", {"since": 0}).json()

    assert sent.status_code in (200, 201)
    assert numbers(body["messages"]) == [1]
    assert body["messages"][0]["id"] == sent.json()["messageId"]
    assert body["cursor"].startswith(redis_store.epoch + "-")


async def test_a_socket_resumes_and_receives_live_on_the_redis_store(
    ws_connect, user, redis_store, twin_store
):
    service = reset_services(redis_store)
    await twin_store.aadd_message(user_message(str(user.pk), 1))  # another instance
    start = Position((await redis_store.ahead(str(user.pk))).epoch, 0, 0)

    ws, first = await ws_connect(user, query=f"cursor={start.encode()}")
    replayed = json.loads((await ws.receive_output(2))["text"])
    await service.apublish("item.added", {"n": 2}, user.pk)
    live = json.loads((await ws.receive_output(2))["text"])

    assert first["payload"]["recovered"] is True
    assert replayed["payload"] == {"n": 1}
    assert live["payload"] == {"n": 2}
    assert live["cursor"] == (await redis_store.ahead(str(user.pk))).encode()


def test_a_sweep_covers_every_queue_in_batches(
    redis_store, clock, sync_config, monkeypatch
):
    monkeypatch.setattr("sync.store.redis.PURGE_BATCH_QUEUES", 2)
    monkeypatch.setattr("sync.store.redis.STATS_LISTED_QUEUES", 3)
    sync_config(MESSAGE_TTL=10)
    for user in range(5):
        redis_store.add_message(user_message(str(user), user))
    many = redis_store.stats()
    clock.advance(11)

    assert redis_store.purge_expired() == 5
    assert (many.total_queues, many.total_messages) == (5, 5)
    assert many.queue_sizes == {}  # past the listing bound: totals only
    assert redis_store.stats().total_messages == 0


def test_appending_the_same_message_twice_stores_it_once(redis_store):
    message = user_message("1", 1)  # a retry after a lost reply sends it again

    first = redis_store.add_message(message)
    again = redis_store.add_message(message)

    assert (again.seq, again.timestamp) == (first.seq, first.timestamp)
    assert numbers(redis_store.read("1", since=0).parse_messages()) == [1]


# A Redis of the test's own, stopped and restarted ----------------------------


@pytest.fixture
def own_redis(tmp_path):
    """Start a redis-server on a free port, with append-only persistence.

    Yields its url and functions to start it again and to stop it.
    """
    if shutil.which("redis-server") is None:
        if os.environ.get("SYNC_REQUIRE_REDIS") == "1":
            pytest.fail("SYNC_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = closed_port()
    command = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always",
        "--save", "",
    ]  # fmt: skip
    processes: list[subprocess.Popen] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        probe = redis.Redis(port=port, socket_connect_timeout=0.2)
        for _ in range(100):  # up to ~5 s to accept connections
            with contextlib.suppress(redis.ConnectionError):
                if probe.ping():
                    return
            time.sleep(0.05)
        pytest.fail("the test's redis-server did not start")

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    if processes[-1].poll() is None:
        stop()


def test_a_restarted_redis_keeps_acknowledged_messages(own_redis, clock):
    url, start, stop = own_redis
    store = RedisMessageStore(url, prefix="fault:", clock=clock)
    acknowledged = store.add_message(user_message("1", 1))
    cursor = store.head("1")

    stop()
    with pytest.raises(StoreUnavailable):
        store.add_message(user_message("1", 2))
    with pytest.raises(StoreUnavailable):
        store.read("1", since=0)
    start()
    store.add_message(user_message("1", 3))

    everything = store.read("1", since=0)
    resumed = store.read("1", cursor=cursor)
    assert everything.parse_messages()[0]["id"] == acknowledged.envelope["id"]
    assert numbers(everything.parse_messages()) == [1, 3]
    assert not everything.gap
    assert numbers(resumed.parse_messages()) == [
        3
    ]  # same epoch: the cursor still holds
    assert not resumed.gap


# Pages bounded by bytes, and the store's byte budget (abuse bounds) -------------


def test_a_redis_read_never_fetches_much_more_than_a_page(redis_store):
    # 1,000 messages of 20 kB (20 MB) in one queue: the read script returns
    # a page and one message more, not the queue.
    for number in range(1000):
        redis_store.add_message(sized_message("1", number, 20_000))
    reply = redis_store._redis.run_raw(
        "read",
        *redis_store._read_args("1", page_request(100_000), redis_store._clock()),
    )
    fetched = sum(len(entry) for entry in reply[7]) + sum(len(e) for e in reply[8])
    assert 100_000 < fetched < 100_000 + 2 * 20_100


def page_request(max_bytes: int):
    from sync.store.paging import PageRequest

    return PageRequest(0, None, frozenset(), 1000, max_bytes)


def test_the_redis_budget_bounds_what_redis_holds_even_for_small_messages(
    redis_store, redis_url, sync_config
):
    # Small messages cost Redis more than their text: their index members,
    # ledger entries and append replies are charged too, and a reply leaves
    # with its message (before, 20,000 small messages kept 3.7 MB of replies
    # outside a 2 MB budget).
    sync_config(STORE_MAX_BYTES=1_048_576)
    for number in range(6_000):
        redis_store.add_message(user_message(str(number % 20), number))

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{redis_store._prefix}*", count=1000))
    held = sum(client.memory_usage(key) or 0 for key in keys)
    replies = sum(1 for key in keys if b":id:" in key)
    client.close()

    stats = redis_store.stats()
    assert stats.total_bytes <= 1_048_576
    assert held < 1.3 * 1_048_576
    assert replies == stats.total_messages
