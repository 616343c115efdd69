"""The store contract, run against every backend: memory and Redis.

Each test gets a fresh store on the fake clock. The Redis one lives under a
key prefix of its own (deleted afterwards) in the test Redis; without Redis
those cases skip, unless SYNC_REQUIRE_REDIS=1 makes them fail.
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
from sync.services import create_store, reset_services
from sync.services.realtime import build_message
from sync.store.cursors import Position, decode_cursor
from sync.store.memory import MemoryMessageStore
from sync.store.redis import RedisMessageStore
from tests.conftest import closed_port


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix owned by this test; its keys are deleted afterwards."""
    prefix = f"test:store:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
async def redis_store(redis_url, redis_prefix, clock) -> RedisMessageStore:
    store = RedisMessageStore(redis_url, prefix=redis_prefix, clock=clock)
    yield store
    await store.aclose()  # on the test's loop, before it closes


@pytest.fixture
async def twin_store(redis_url, redis_prefix, clock) -> RedisMessageStore:
    """A second instance on the same Redis and prefix as `redis_store`."""
    store = RedisMessageStore(redis_url, prefix=redis_prefix, clock=clock)
    yield store
    await store.aclose()


@pytest.fixture(params=["memory", "redis"])
def any_store(request, clock):
    """Each backend in turn, as the service's store, on the fake clock."""
    if request.param == "memory":
        store = MemoryMessageStore(clock=clock)
    else:
        store = request.getfixturevalue("redis_store")
    reset_services(store)
    return store


def user_message(user_id: str, number: int) -> dict:
    return build_message("item.added", {"n": number}, user_id=user_id)


def broadcast_message(number: int, topics=()) -> dict:
    return build_message("announcement", {"n": number}, topics=topics)


def numbers(messages: list[dict]) -> list[int]:
    return [message["payload"]["n"] for message in messages]


def test_user_and_broadcast_messages_merge_in_publication_order(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))
    any_store.add_message(user_message("1", 3))

    result = any_store.read("1", since=0)

    assert numbers(result.parse_messages()) == [1, 2, 3]
    assert [m["userId"] for m in result.parse_messages()] == ["1", None, "1"]
    assert not result.has_more
    assert not result.gap


def test_a_user_never_reads_another_users_messages(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(user_message("2", 2))

    assert numbers(any_store.read("1", since=0).parse_messages()) == [1]
    assert numbers(any_store.read("2", since=0).parse_messages()) == [2]
    assert any_store.read("3", since=0).parse_messages() == []


def test_topic_broadcasts_reach_only_readers_of_one_of_their_topics(any_store):
    any_store.add_message(broadcast_message(1, topics=["ops", "sales"]))
    any_store.add_message(broadcast_message(2))

    assert numbers(any_store.read("1", since=0).parse_messages()) == [2]
    assert numbers(any_store.read("1", since=0, topics=["sales"]).parse_messages()) == [
        1,
        2,
    ]
    assert numbers(any_store.read("1", since=0, topics=["hr"]).parse_messages()) == [2]


def test_each_message_cursor_resumes_exactly_after_it(any_store):
    for number in range(1, 6):
        any_store.add_message(user_message("1", number))
        any_store.add_message(broadcast_message(100 + number))
    everything = any_store.read("1", since=0).parse_messages()

    for index, message in enumerate(everything):
        rest = any_store.read(
            "1", cursor=decode_cursor(message["cursor"])
        ).parse_messages()
        assert [m["id"] for m in rest] == [m["id"] for m in everything[index + 1 :]]


def test_timestamps_strictly_increase_within_a_queue_in_one_millisecond(any_store):
    for number in range(5):
        any_store.add_message(user_message("1", number))

    stamps = [m["timestamp"] for m in any_store.read("1", since=0).parse_messages()]

    assert stamps == sorted(set(stamps))


def test_paging_by_limit_then_timestamp_sees_everything_once(any_store):
    for number in range(7):
        any_store.add_message(user_message("1", number))
        any_store.add_message(broadcast_message(100 + number))
    seen, since = [], 0
    while True:
        page = any_store.read("1", since=since, limit=3)
        assert len(page.parse_messages()) <= 3
        seen += numbers(page.parse_messages())
        since = page.timestamp
        if not page.has_more:
            break

    assert sorted(seen) == sorted(list(range(7)) + list(range(100, 107)))
    assert len(seen) == len(set(seen)) == 14


def test_paging_by_cursor_sees_everything_once_in_order(any_store):
    for number in range(10):
        any_store.add_message(user_message("1", number))
    seen, cursor, has_more = [], None, True
    while has_more:
        page = any_store.read("1", cursor=cursor, since=0, limit=4)
        seen += numbers(page.parse_messages())
        cursor, has_more = page.position, page.has_more

    assert seen == list(range(10))


def test_watermark_is_never_reached_by_a_later_message(any_store):
    any_store.add_message(user_message("1", 1))
    first = any_store.read("1", since=0)

    any_store.add_message(broadcast_message(2))  # same fake millisecond
    any_store.add_message(user_message("1", 3))

    assert numbers(any_store.read("1", since=first.timestamp).parse_messages()) == [
        2,
        3,
    ]


def test_messages_expire_after_the_ttl(any_store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    any_store.add_message(user_message("1", 1))
    clock.advance(5)
    any_store.add_message(user_message("1", 2))

    clock.advance(6)  # the first is 11 s old, the second 6 s
    result = any_store.read("1", since=0)

    assert numbers(result.parse_messages()) == [2]
    assert result.gap  # something after since=0 was dropped


def test_cleanup_sweeps_idle_queues_every_interval(any_store, clock, sync_config):
    sync_config(MESSAGE_TTL=10, CLEANUP_INTERVAL=30)
    any_store.add_message(user_message("1", 1))
    any_store.add_message(user_message("2", 2))
    clock.advance(11)
    assert any_store.stats().total_messages == 2  # expired, not swept yet

    clock.advance(20)  # 31 s since the store started: sweep is due

    assert any_store.stats().total_messages == 0
    assert any_store.stats().total_queues == 0


def test_overflow_drops_the_oldest_and_reports_a_gap(any_store, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    before = any_store.head("1")
    for number in range(5):
        any_store.add_message(user_message("1", number))

    by_since = any_store.read("1", since=0)
    by_cursor = any_store.read("1", cursor=before)

    assert numbers(by_since.parse_messages()) == [2, 3, 4]
    assert by_since.gap
    assert numbers(by_cursor.parse_messages()) == [2, 3, 4]
    assert by_cursor.gap


def test_no_gap_when_resuming_after_the_dropped_messages(any_store, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    for number in range(5):
        any_store.add_message(user_message("1", number))
    latest = any_store.read("1", since=0).parse_messages()[-2]

    result = any_store.read("1", cursor=decode_cursor(latest["cursor"]))

    assert numbers(result.parse_messages()) == [4]
    assert not result.gap


def test_cursor_from_another_epoch_replays_everything_with_a_gap(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))

    result = any_store.read("1", cursor=Position("0ther", 1, 0))

    assert numbers(result.parse_messages()) == [1, 2]
    assert result.gap


def test_cursor_beyond_the_head_is_not_trusted(any_store):
    any_store.add_message(user_message("1", 1))

    result = any_store.read("1", cursor=Position(any_store.epoch, 9, 0))

    assert numbers(result.parse_messages()) == [1]
    assert result.gap


def test_stats_count_non_empty_queues_and_messages(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(user_message("1", 2))
    any_store.add_message(user_message("2", 3))
    any_store.add_message(broadcast_message(4))

    stats = any_store.stats()

    assert (stats.total_queues, stats.total_messages) == (3, 4)
    assert stats.queue_sizes == {"1": 2, "2": 1, "broadcast": 1}


def test_get_messages_since_returns_the_users_messages(any_store):
    any_store.add_message(user_message("1", 1))
    first = any_store.read("1", since=0).timestamp
    any_store.add_message(user_message("1", 2))

    assert numbers(any_store.get_messages_since("1", first)) == [2]


async def test_waiting_reader_wakes_when_a_message_arrives(any_store):
    position = any_store.head("1")
    waiting = asyncio.create_task(any_store.wait_for_messages("1", position, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    # Published from another thread, as a sync Django view would.
    thread = threading.Thread(
        target=any_store.add_message, args=(user_message("1", 1),)
    )
    thread.start()
    thread.join()

    assert await asyncio.wait_for(waiting, 1) is True


async def test_waiting_reader_ignores_other_users(any_store):
    position = any_store.head("1")
    any_store.add_message(user_message("2", 1))

    assert await any_store.wait_for_messages("1", position, 0.05) is False


async def test_wait_returns_at_once_if_a_message_came_before_it(any_store):
    position = any_store.head("1")
    any_store.add_message(broadcast_message(1))

    assert await asyncio.wait_for(any_store.wait_for_messages("1", position, 5), 1)


def test_concurrent_publishers_and_a_reader_see_each_message_once(any_store):
    publishers, per_thread = 4, 250
    done = threading.Event()

    def publish(thread_number: int) -> None:
        for number in range(per_thread):
            message = user_message("1", thread_number * 1000 + number)
            if number % 3 == 0:
                message = broadcast_message(thread_number * 1000 + number)
            any_store.add_message(message)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    seen_by_since: list[int] = []
    seen_by_cursor: list[int] = []
    since, cursor = 0, None
    for thread in threads:
        thread.start()
    while not done.is_set():
        finished = not any(thread.is_alive() for thread in threads)
        page = any_store.read("1", since=since, limit=50)
        seen_by_since += numbers(page.parse_messages())
        since = page.timestamp
        page = any_store.read("1", cursor=cursor, since=0, limit=50)
        seen_by_cursor += numbers(page.parse_messages())
        cursor = page.position
        if finished and not page.has_more:
            done.set()
    while (page := any_store.read("1", since=since, limit=50)).count:
        seen_by_since += numbers(page.parse_messages())
        since = page.timestamp

    expected = sorted(
        n * 1000 + i for n in range(publishers) for i in range(per_thread)
    )
    for seen in (seen_by_since, seen_by_cursor):
        assert sorted(seen) == expected  # all of them, none twice
        for n in range(publishers):  # each publisher's messages in its order
            own = [value for value in seen if value // 1000 == n]
            assert own == sorted(own)


@pytest.mark.parametrize("limit", [1, 2])
def test_a_page_never_splits_messages_sharing_a_timestamp(any_store, limit):
    # A user message and a broadcast may share a millisecond; `since` paging
    # must still see both exactly once.
    any_store.add_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))
    any_store.add_message(user_message("1", 3))
    seen, since, has_more = [], 0, True
    while has_more:
        page = any_store.read("1", since=since, limit=limit)
        seen += numbers(page.parse_messages())
        since, has_more = page.timestamp, page.has_more

    assert seen == [1, 2, 3]


def test_a_readers_huge_since_changes_no_later_timestamp(any_store, clock):
    any_store.read("1", since=999_999_999_999_999_999)
    any_store.read("1", since=int(clock() * 1000) + 59_000)

    entry = any_store.add_message(user_message("2", 1))

    assert entry.timestamp == int(clock() * 1000)
    assert numbers(any_store.read("2", since=entry.timestamp - 1).parse_messages()) == [
        1
    ]


def test_a_readers_messages_never_share_a_timestamp_on_a_still_clock(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))
    any_store.add_message(user_message("2", 3))
    any_store.add_message(user_message("1", 4))
    any_store.add_message(broadcast_message(5))

    stamps = [m["timestamp"] for m in any_store.read("1", since=0).parse_messages()]

    assert stamps == sorted(set(stamps))


def test_a_dropped_topic_broadcast_is_no_gap_for_other_readers(
    any_store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    before = any_store.head("1")
    since = any_store.read("1").timestamp
    any_store.add_message(broadcast_message(1, topics=["sales"]))
    clock.advance(11)  # the sales broadcast expires
    any_store.add_message(broadcast_message(2))

    for options in ({"cursor": before}, {"since": since}):
        for topics in ((), ("ops",)):
            result = any_store.read("1", topics=topics, **options)
            assert numbers(result.parse_messages()) == [2]
            assert not result.gap
        assert any_store.read("1", topics=["sales"], **options).gap


def test_dropped_broadcasts_of_untracked_topics_count_for_every_topic_reader(
    any_store, clock, sync_config, monkeypatch
):
    # Past the bound on remembered topics the rule turns conservative.
    monkeypatch.setattr("sync.store.memory.MAX_TRACKED_DROP_TOPICS", 2)
    sync_config(MESSAGE_TTL=10)
    before = any_store.head("1")
    for topic in ("a", "b", "c"):
        any_store.add_message(broadcast_message(0, topics=[topic]))
    clock.advance(11)

    assert any_store.read("1", cursor=before, topics=["a"]).gap  # folded: conservative
    assert any_store.read("1", cursor=before, topics=["c"]).gap  # still tracked
    assert not any_store.read("1", cursor=before).gap  # follows no topic at all


def test_since_before_the_store_started_is_a_gap(any_store, clock):
    started_ms = int(clock() * 1000)
    clock.advance(1)
    any_store.add_message(user_message("1", 1))

    from_before = any_store.read("1", since=started_ms - 60_000)
    watermark = any_store.read("1", since=0)

    assert numbers(from_before.parse_messages()) == [1]
    assert from_before.gap  # what came before this store is gone
    assert not watermark.gap
    assert not any_store.read("1", since=watermark.timestamp).gap


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


async def test_async_twins_see_what_sync_calls_stored(any_store):
    await any_store.aadd_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))

    result = await any_store.aread("1", since=0)

    assert numbers(result.parse_messages()) == [1, 2]
    assert await any_store.ahead("1") == result.position
    assert (await any_store.astats()).total_messages == 2


async def test_a_wait_sees_a_message_published_on_another_instance(
    redis_store, twin_store
):
    position = await redis_store.ahead("1")
    waiting = asyncio.create_task(redis_store.wait_for_messages("1", position, 5))
    await asyncio.sleep(0.05)

    started = asyncio.get_running_loop().time()
    await twin_store.aadd_message(user_message("1", 1))

    assert await asyncio.wait_for(waiting, 3) is True
    assert asyncio.get_running_loop().time() - started < 0.5  # woken, not polled


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


async def test_a_wait_without_news_ends_at_its_timeout(redis_store, twin_store):
    position = await redis_store.ahead("1")
    await twin_store.aadd_message(user_message("2", 1))  # someone else's

    assert await redis_store.wait_for_messages("1", position, 0.3) is False


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


async def test_a_socket_gets_an_error_frame_then_1011_when_the_store_is_unreachable(
    ws_connect, user, clock
):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    reset_services(RedisMessageStore(url, prefix="unreachable:", clock=clock))

    ws, first = await ws_connect(user)

    assert first["type"] == "error"
    assert first["payload"]["code"] == "store_unavailable"
    assert await ws.receive_output(2) == {"type": "websocket.close", "code": 1011}


def test_the_api_answers_503_when_the_store_is_unreachable(api_client, clock):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    reset_services(RedisMessageStore(url, prefix="unreachable:", clock=clock))

    response = api_client.get("/api/sync/poll", {"since": 0})

    assert response.status_code == 503
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "store_unavailable"


def test_redis_url_selects_the_redis_store(sync_config, settings, redis_prefix):
    sync_config(REDIS_URL="redis://127.0.0.1:6379/15")
    settings.SYNC_STORE_KEY_PREFIX = redis_prefix

    store = create_store()

    assert isinstance(store, RedisMessageStore)
    assert store._prefix == redis_prefix


def test_without_redis_url_the_store_is_in_memory(sync_config):
    sync_config(REDIS_URL=None)

    assert isinstance(create_store(), MemoryMessageStore)


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


async def test_a_wait_survives_a_dropped_subscription(redis_store, twin_store):
    position = await redis_store.ahead("1")
    waiting = asyncio.create_task(redis_store.wait_for_messages("1", position, 5))
    await asyncio.sleep(0.1)
    listener = redis_store.bus._listener
    listener._pubsub.connection.disconnect()  # as if Redis dropped it

    await twin_store.aadd_message(user_message("1", 1))

    assert await asyncio.wait_for(waiting, 4) is True


class RecordingHub:
    """Stands in for the delivery hub: what other instances hand over."""

    def __init__(self) -> None:
        self.entries: list = []
        self.catch_ups = 0

    def dispatch_threadsafe(self, entry) -> None:
        self.entries.append(entry)

    def catch_up_all(self) -> None:
        self.catch_ups += 1


async def wait_for(condition, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def test_other_instances_messages_reach_this_instances_hub(
    redis_store, twin_store
):
    hub = RecordingHub()
    redis_store.bus.deliver_remote_to(hub)
    await wait_for(lambda: hub.catch_ups == 1)  # subscribed: catch up once

    sent = await twin_store.aadd_message(user_message("1", 1))
    await redis_store.aadd_message(user_message("1", 2))  # our own: not again
    await wait_for(lambda: hub.entries)
    await asyncio.sleep(0.1)

    [entry] = hub.entries
    assert (entry.queue, entry.seq, entry.envelope) == (
        sent.queue,
        sent.seq,
        sent.envelope,
    )


async def test_a_lost_subscription_makes_every_socket_catch_up(redis_store, twin_store):
    hub = RecordingHub()
    redis_store.bus.deliver_remote_to(hub)
    await wait_for(lambda: hub.catch_ups == 1)

    redis_store.bus._listener._pubsub.connection.disconnect()  # as if Redis dropped it

    await wait_for(lambda: hub.catch_ups == 2)


async def test_instances_count_each_others_sockets_until_one_falls_silent(
    redis_store, twin_store, clock
):
    await redis_store.presence.areport_connections(
        "a", active=3, subscriptions=2, opened=5
    )
    await twin_store.presence.areport_connections(
        "b", active=1, subscriptions=0, opened=4
    )

    seen_by_b = await twin_store.presence.aconnections_elsewhere("b")
    assert (seen_by_b.active, seen_by_b.subscriptions, seen_by_b.opened) == (3, 2, 9)
    assert twin_store.presence.connections_elsewhere("b") == seen_by_b

    clock.advance(16)  # a stopped reporting: taken for dead
    await twin_store.presence.areport_connections(
        "b", active=1, subscriptions=0, opened=0
    )
    seen_later = await twin_store.presence.aconnections_elsewhere("b")
    assert (seen_later.active, seen_later.opened) == (0, 9)


async def test_a_stopping_instance_leaves_the_figures_at_once(redis_store, twin_store):
    await redis_store.presence.areport_connections(
        "a", active=3, subscriptions=0, opened=3
    )
    await asyncio.to_thread(redis_store.presence.forget_connections, "a")

    assert (await twin_store.presence.aconnections_elsewhere("b")).active == 0


# Purging (sync_purge) and the live instances (admin monitor) ------------------


def test_purging_a_users_queue_drops_its_messages_and_leaves_a_gap(any_store):
    any_store.add_message(user_message("1", 1))
    any_store.add_message(user_message("1", 2))
    any_store.add_message(user_message("2", 3))
    any_store.add_message(broadcast_message(4))

    assert any_store.purge_messages("1", dry_run=True) == 2
    assert any_store.stats().total_messages == 4  # a dry run drops nothing
    assert any_store.purge_messages("1") == 2

    left = any_store.read("1", since=0)
    assert numbers(left.parse_messages()) == [4]
    assert left.gap  # the purged messages were lost to this reader
    assert numbers(any_store.read("2", since=0).parse_messages()) == [3, 4]
    assert any_store.stats().queue_sizes == {"2": 1, "broadcast": 1}
    assert any_store.purge_messages("nobody") == 0


def test_purging_everything_empties_every_queue_in_batches(any_store, monkeypatch):
    monkeypatch.setattr("sync.store.redis.PURGE_BATCH_QUEUES", 2)
    for user in range(5):
        any_store.add_message(user_message(str(user), user))
    any_store.add_message(broadcast_message(9, topics=["ops"]))

    assert any_store.purge_messages(dry_run=True) == 6
    assert any_store.purge_messages() == 6

    assert (any_store.stats().total_queues, any_store.stats().total_messages) == (0, 0)
    assert any_store.read("3", since=0, topics=["ops"]).gap
    after = any_store.head("3")
    any_store.add_message(user_message("3", 10))
    fresh = any_store.read("3", cursor=after)
    assert (numbers(fresh.parse_messages()), fresh.gap) == ([10], False)


def test_purging_expired_messages_keeps_the_live_ones(any_store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    any_store.add_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))
    clock.advance(5)
    any_store.add_message(user_message("1", 3))
    any_store.add_message(user_message("2", 4))
    clock.advance(6)  # 1 and 2 are 11 s old: expired, not swept yet

    assert any_store.purge_messages(expired_only=True, dry_run=True) == 2
    assert any_store.purge_messages("2", expired_only=True) == 0
    assert any_store.purge_messages("1", expired_only=True, dry_run=True) == 1
    assert any_store.purge_messages(expired_only=True) == 2

    assert any_store.stats().queue_sizes == {"1": 1, "2": 1}


async def test_live_instances_are_those_that_reported_lately(any_store, clock):
    await any_store.presence.areport_connections(
        "a", active=3, subscriptions=2, opened=5
    )

    listed = [
        (figures.instance_id, figures.active, figures.subscriptions)
        for figures in any_store.presence.live_instances()
    ]

    # A local store serves one process: it has no other instances to list.
    assert listed == ([("a", 3, 2)] if any_store.shared else [])
    clock.advance(16)  # silent for longer than INSTANCE_SILENCE_SECONDS
    assert any_store.presence.live_instances() == []


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


def sized_message(user_id: str | None, number: int, size: int, topics=()) -> dict:
    """A message whose payload holds `size` bytes of text."""
    payload = {"n": number, "blob": "x" * size}
    if user_id is None:
        return build_message("announcement", payload, topics=topics)
    return build_message("item.added", payload, user_id=user_id)


def page_bytes(page) -> int:
    return sum(len(frame) for frame in page.frames())


@pytest.mark.parametrize("start", ["cursor", "since"])
def test_pages_bounded_by_bytes_see_everything_once_in_order(any_store, start):
    for number in range(12):
        any_store.add_message(sized_message("1", number, 10_000))
        any_store.add_message(sized_message(None, 100 + number, 10_000))
    seen, cursor, since, pages = [], None, 0, 0
    while True:
        page = any_store.read(
            "1", cursor=cursor, since=since, limit=1000, max_bytes=45_000
        )
        pages += 1
        assert page_bytes(page) <= 45_000
        seen += numbers(page.parse_messages())
        if start == "cursor":
            cursor = page.position
        else:
            since = page.timestamp
        if not page.has_more:
            break

    assert pages >= 6  # 24 messages of 10 kB, 4 to a page
    expected = [
        n for pair in zip(range(12), range(100, 112), strict=True) for n in pair
    ]
    assert seen == expected


def test_a_message_larger_than_the_byte_bound_still_comes_alone(any_store):
    any_store.add_message(sized_message("1", 1, 30_000))
    any_store.add_message(sized_message("1", 2, 10))

    first = any_store.read("1", since=0, max_bytes=1_000)
    second = any_store.read("1", cursor=first.position, max_bytes=1_000)

    assert numbers(first.parse_messages()) == [1]
    assert first.has_more
    assert numbers(second.parse_messages()) == [2]
    assert not second.has_more


def test_broadcasts_of_other_topics_count_toward_no_page(any_store):
    # A reader of "ops" behind 20 large broadcasts for "sales" gets the ops
    # message in its first page, and its cursor moves past all of them.
    for number in range(20):
        any_store.add_message(sized_message(None, number, 20_000, topics=["sales"]))
    any_store.add_message(sized_message(None, 99, 10, topics=["ops"]))

    page = any_store.read("1", since=0, topics=["ops"], max_bytes=30_000)

    assert numbers(page.parse_messages()) == [99]
    assert not page.has_more
    assert page.position.broadcast_seq == 21


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


def test_past_the_byte_budget_the_oldest_messages_of_any_queue_go(
    any_store, sync_config
):
    # Both stores bound the store as a whole: one user filling it pushes out
    # the oldest messages, its own and others', and readers behind them see
    # a gap; what the store charges never passes the budget.
    sync_config(STORE_MAX_BYTES=1_048_576)
    any_store.add_message(sized_message("bob", 0, 1_000))
    for number in range(100):
        any_store.add_message(sized_message("mallory", number, 20_000))

    assert any_store.stats().total_bytes <= 1_048_576
    assert any_store.read("bob", since=0).gap is True
    kept = numbers(any_store.read("mallory", since=0, limit=1000).parse_messages())
    assert kept == list(range(100 - len(kept), 100))
    assert 40 < len(kept) < 52  # ~1 MiB of 20 kB messages


def test_the_charge_follows_what_is_kept_whatever_the_payload_shape(any_store):
    # Charged bytes are the encoded text plus a fixed overhead: a payload
    # of 10,000 empty objects costs its 30 kB, not what Python objects of it
    # would take (about 700 kB).
    message = build_message("item.added", {"a": [{}] * 9_998}, user_id="1")
    any_store.add_message(message)
    charged = any_store.stats().total_bytes
    assert 30_000 < charged < 32_000


def test_entries_stored_by_an_older_release_are_still_read(redis_store, redis_url):
    # An older release kept one JSON envelope line per entry; during a
    # rolling upgrade both kinds meet in one queue.
    redis_store.add_message(user_message("1", 1))
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_store._prefix}m:u:1"
    [(entry, score)] = client.zrange(key, 0, -1, withscores=True)
    header, topics, _ = entry.split(b"\n", 2)
    envelope = {
        "id": "msg_old",
        "type": "item.added",
        "payload": {"n": 0},
        "timestamp": 0,
        "userId": "1",
        "topics": [],
        "cursor": None,
        "correlationId": None,
    }
    old = b"\n".join([header, topics, json.dumps(envelope).encode()])
    client.zrem(key, entry)
    client.zadd(key, {old: score})
    client.close()

    [message] = redis_store.read("1", since=0).parse_messages()

    assert message["id"] == "msg_old"
    assert message["payload"] == {"n": 0}
    assert message["timestamp"] > 0
    assert message["cursor"]


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
