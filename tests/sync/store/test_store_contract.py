"""The store contract (sync/store/base.py), run against sync/store/memory.py and
sync/store/redis.py.

Each test gets a fresh store on the fake clock. The Redis one lives under a
key prefix of its own (deleted afterwards) in the test Redis; without Redis
those cases skip, unless SYNC_REQUIRE_REDIS=1 makes them fail.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from sync.services import reset_services
from sync.services.realtime import build_message
from sync.store.cursors import Position, decode_cursor
from sync.store.memory import MemoryMessageStore
from tests.sync.store.messages import (
    broadcast_message,
    numbers,
    sized_message,
    user_message,
)


@pytest.fixture(params=["memory", "redis"])
def any_store(request, clock):
    """Each backend in turn, as the service's store, on the fake clock."""
    if request.param == "memory":
        store = MemoryMessageStore(clock=clock)
    else:
        store = request.getfixturevalue("redis_store")
    reset_services(store)
    return store


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


async def test_async_twins_see_what_sync_calls_stored(any_store):
    await any_store.aadd_message(user_message("1", 1))
    any_store.add_message(broadcast_message(2))

    result = await any_store.aread("1", since=0)

    assert numbers(result.parse_messages()) == [1, 2]
    assert await any_store.ahead("1") == result.position
    assert (await any_store.astats()).total_messages == 2


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


# Pages bounded by bytes, and the store's byte budget (abuse bounds) -------------


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
