"""The in-memory store: positions, TTL, overflow, gaps, waits, concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sync.services.cursors import Position, decode_cursor
from sync.services.message_queue import (
    STALE_ENTRY_BYTES,
    MemoryMessageStore,
    message_size,
)
from sync.services.realtime import build_message


def user_message(user_id: str, number: int) -> dict:
    return build_message("item.added", {"n": number}, user_id=user_id)


def broadcast_message(number: int, topics=()) -> dict:
    return build_message("announcement", {"n": number}, topics=topics)


def numbers(messages: list[dict]) -> list[int]:
    return [message["payload"]["n"] for message in messages]


def test_user_and_broadcast_messages_merge_in_publication_order(store):
    store.add_message(user_message("1", 1))
    store.add_message(broadcast_message(2))
    store.add_message(user_message("1", 3))

    result = store.read("1", since=0)

    assert numbers(result.messages) == [1, 2, 3]
    assert [m["userId"] for m in result.messages] == ["1", None, "1"]
    assert not result.has_more
    assert not result.gap


def test_a_user_never_reads_another_users_messages(store):
    store.add_message(user_message("1", 1))
    store.add_message(user_message("2", 2))

    assert numbers(store.read("1", since=0).messages) == [1]
    assert numbers(store.read("2", since=0).messages) == [2]
    assert store.read("3", since=0).messages == []


def test_topic_broadcasts_reach_only_readers_of_one_of_their_topics(store):
    store.add_message(broadcast_message(1, topics=["ops", "sales"]))
    store.add_message(broadcast_message(2))

    assert numbers(store.read("1", since=0).messages) == [2]
    assert numbers(store.read("1", since=0, topics=["sales"]).messages) == [1, 2]
    assert numbers(store.read("1", since=0, topics=["hr"]).messages) == [2]


def test_each_message_cursor_resumes_exactly_after_it(store):
    for number in range(1, 6):
        store.add_message(user_message("1", number))
        store.add_message(broadcast_message(100 + number))
    everything = store.read("1", since=0).messages

    for index, message in enumerate(everything):
        rest = store.read("1", cursor=decode_cursor(message["cursor"])).messages
        assert [m["id"] for m in rest] == [m["id"] for m in everything[index + 1 :]]


def test_timestamps_strictly_increase_within_a_queue_in_one_millisecond(store):
    for number in range(5):
        store.add_message(user_message("1", number))

    stamps = [m["timestamp"] for m in store.read("1", since=0).messages]

    assert stamps == sorted(set(stamps))


def test_paging_by_limit_then_timestamp_sees_everything_once(store):
    for number in range(7):
        store.add_message(user_message("1", number))
        store.add_message(broadcast_message(100 + number))
    seen, since = [], 0
    while True:
        page = store.read("1", since=since, limit=3)
        assert len(page.messages) <= 3
        seen += numbers(page.messages)
        since = page.timestamp
        if not page.has_more:
            break

    assert sorted(seen) == sorted(list(range(7)) + list(range(100, 107)))
    assert len(seen) == len(set(seen)) == 14


def test_paging_by_cursor_sees_everything_once_in_order(store):
    for number in range(10):
        store.add_message(user_message("1", number))
    seen, cursor, has_more = [], None, True
    while has_more:
        page = store.read("1", cursor=cursor, since=0, limit=4)
        seen += numbers(page.messages)
        cursor, has_more = page.position, page.has_more

    assert seen == list(range(10))


def test_watermark_is_never_reached_by_a_later_message(store):
    store.add_message(user_message("1", 1))
    first = store.read("1", since=0)

    store.add_message(broadcast_message(2))  # same fake millisecond
    store.add_message(user_message("1", 3))

    assert numbers(store.read("1", since=first.timestamp).messages) == [2, 3]


def test_messages_expire_after_the_ttl(store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    store.add_message(user_message("1", 1))
    clock.advance(5)
    store.add_message(user_message("1", 2))

    clock.advance(6)  # the first is 11 s old, the second 6 s
    result = store.read("1", since=0)

    assert numbers(result.messages) == [2]
    assert result.gap  # something after since=0 was dropped


def test_cleanup_sweeps_idle_queues_every_interval(store, clock, sync_config):
    sync_config(MESSAGE_TTL=10, CLEANUP_INTERVAL=30)
    store.add_message(user_message("1", 1))
    store.add_message(user_message("2", 2))
    clock.advance(11)
    assert store.stats().total_messages == 2  # expired, not swept yet

    clock.advance(20)  # 31 s since the store started: sweep is due

    assert store.stats().total_messages == 0
    assert store.stats().total_queues == 0


def test_overflow_drops_the_oldest_and_reports_a_gap(store, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    before = store.head("1")
    for number in range(5):
        store.add_message(user_message("1", number))

    by_since = store.read("1", since=0)
    by_cursor = store.read("1", cursor=before)

    assert numbers(by_since.messages) == [2, 3, 4]
    assert by_since.gap
    assert numbers(by_cursor.messages) == [2, 3, 4]
    assert by_cursor.gap


def test_no_gap_when_resuming_after_the_dropped_messages(store, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    for number in range(5):
        store.add_message(user_message("1", number))
    latest = store.read("1", since=0).messages[-2]

    result = store.read("1", cursor=decode_cursor(latest["cursor"]))

    assert numbers(result.messages) == [4]
    assert not result.gap


def test_cursor_from_another_epoch_replays_everything_with_a_gap(store):
    store.add_message(user_message("1", 1))
    store.add_message(broadcast_message(2))

    result = store.read("1", cursor=Position("0ther", 1, 0))

    assert numbers(result.messages) == [1, 2]
    assert result.gap


def test_cursor_beyond_the_head_is_not_trusted(store):
    store.add_message(user_message("1", 1))

    result = store.read("1", cursor=Position(store.epoch, 9, 0))

    assert numbers(result.messages) == [1]
    assert result.gap


def test_a_new_store_has_a_new_epoch():
    assert MemoryMessageStore().epoch != MemoryMessageStore().epoch


def test_stats_count_non_empty_queues_and_messages(store):
    store.add_message(user_message("1", 1))
    store.add_message(user_message("1", 2))
    store.add_message(user_message("2", 3))
    store.add_message(broadcast_message(4))

    stats = store.stats()

    assert (stats.total_queues, stats.total_messages) == (3, 4)
    assert stats.queue_sizes == {"1": 2, "2": 1, "broadcast": 1}


def test_get_messages_since_returns_the_users_messages(store):
    store.add_message(user_message("1", 1))
    first = store.read("1", since=0).timestamp
    store.add_message(user_message("1", 2))

    assert numbers(store.get_messages_since("1", first)) == [2]


async def test_waiting_reader_wakes_when_a_message_arrives(store):
    position = store.head("1")
    waiting = asyncio.create_task(store.wait_for_messages("1", position, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    # Published from another thread, as a sync Django view would.
    thread = threading.Thread(target=store.add_message, args=(user_message("1", 1),))
    thread.start()
    thread.join()

    assert await asyncio.wait_for(waiting, 1) is True


async def test_waiting_reader_ignores_other_users(store):
    position = store.head("1")
    store.add_message(user_message("2", 1))

    assert await store.wait_for_messages("1", position, 0.05) is False


async def test_wait_returns_at_once_if_a_message_came_before_it(store):
    position = store.head("1")
    store.add_message(broadcast_message(1))

    assert await asyncio.wait_for(store.wait_for_messages("1", position, 5), 1)


def test_concurrent_publishers_and_a_reader_see_each_message_once(store):
    publishers, per_thread = 4, 250
    done = threading.Event()

    def publish(thread_number: int) -> None:
        for number in range(per_thread):
            message = user_message("1", thread_number * 1000 + number)
            if number % 3 == 0:
                message = broadcast_message(thread_number * 1000 + number)
            store.add_message(message)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    seen_by_since: list[int] = []
    seen_by_cursor: list[int] = []
    since, cursor = 0, None
    for thread in threads:
        thread.start()
    while not done.is_set():
        finished = not any(thread.is_alive() for thread in threads)
        page = store.read("1", since=since, limit=50)
        seen_by_since += numbers(page.messages)
        since = page.timestamp
        page = store.read("1", cursor=cursor, since=0, limit=50)
        seen_by_cursor += numbers(page.messages)
        cursor = page.position
        if finished and not page.has_more:
            done.set()
    while (page := store.read("1", since=since, limit=50)).messages:
        seen_by_since += numbers(page.messages)
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
def test_a_page_never_splits_messages_sharing_a_timestamp(store, limit):
    # A user message and a broadcast may share a millisecond; `since` paging
    # must still see both exactly once.
    store.add_message(user_message("1", 1))
    store.add_message(broadcast_message(2))
    store.add_message(user_message("1", 3))
    seen, since, has_more = [], 0, True
    while has_more:
        page = store.read("1", since=since, limit=limit)
        seen += numbers(page.messages)
        since, has_more = page.timestamp, page.has_more

    assert seen == [1, 2, 3]


# Hardening (issue 6) ------------------------------------------------------------


def test_a_readers_huge_since_changes_no_later_timestamp(store, clock):
    store.read("1", since=999_999_999_999_999_999)
    store.read("1", since=int(clock() * 1000) + 59_000)

    entry = store.add_message(user_message("2", 1))

    assert entry.timestamp == int(clock() * 1000)
    assert numbers(store.read("2", since=entry.timestamp - 1).messages) == [1]


def test_a_readers_messages_never_share_a_timestamp_on_a_still_clock(store):
    store.add_message(user_message("1", 1))
    store.add_message(broadcast_message(2))
    store.add_message(user_message("2", 3))
    store.add_message(user_message("1", 4))
    store.add_message(broadcast_message(5))

    stamps = [m["timestamp"] for m in store.read("1", since=0).messages]

    assert stamps == sorted(set(stamps))


def test_a_dropped_topic_broadcast_is_no_gap_for_other_readers(
    store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    before = store.head("1")
    since = store.read("1").timestamp
    store.add_message(broadcast_message(1, topics=["sales"]))
    clock.advance(11)  # the sales broadcast expires
    store.add_message(broadcast_message(2))

    for options in ({"cursor": before}, {"since": since}):
        for topics in ((), ("ops",)):
            result = store.read("1", topics=topics, **options)
            assert numbers(result.messages) == [2]
            assert not result.gap
        assert store.read("1", topics=["sales"], **options).gap


def test_dropped_broadcasts_of_untracked_topics_count_for_every_topic_reader(
    store, clock, sync_config, monkeypatch
):
    # Past the bound on remembered topics the rule turns conservative.
    monkeypatch.setattr("sync.services.message_queue.MAX_TRACKED_DROP_TOPICS", 2)
    sync_config(MESSAGE_TTL=10)
    before = store.head("1")
    for topic in ("a", "b", "c"):
        store.add_message(broadcast_message(0, topics=[topic]))
    clock.advance(11)

    assert store.read("1", cursor=before, topics=["a"]).gap  # folded: conservative
    assert store.read("1", cursor=before, topics=["c"]).gap  # still tracked
    assert not store.read("1", cursor=before).gap  # follows no topic at all


def test_since_before_the_store_started_is_a_gap(store, clock):
    started_ms = int(clock() * 1000)
    clock.advance(1)
    store.add_message(user_message("1", 1))

    from_before = store.read("1", since=started_ms - 60_000)
    watermark = store.read("1", since=0)

    assert numbers(from_before.messages) == [1]
    assert from_before.gap  # what came before this store is gone
    assert not watermark.gap
    assert not store.read("1", since=watermark.timestamp).gap


def test_the_store_drops_its_oldest_messages_past_its_byte_budget(store, sync_config):
    one = message_size(user_message("1", 0))
    sync_config(STORE_MAX_BYTES=3 * one)
    before = {user: store.head(user) for user in ("1", "2")}
    store.add_message(user_message("1", 0))
    store.add_message(user_message("2", 1))
    store.add_message(user_message("1", 2))
    store.add_message(user_message("2", 3))  # the store's oldest (0) goes

    first, second = store.read("1", cursor=before["1"]), store.read("2", since=0)

    assert numbers(first.messages) == [2]
    assert first.gap
    assert numbers(second.messages) == [1, 3]
    assert not second.gap
    assert store.stats().total_bytes <= 3 * one


def test_the_byte_budget_counts_what_ttl_and_overflow_left_behind(store, sync_config):
    one = message_size(user_message("1", 0))
    sync_config(STORE_MAX_BYTES=20 * one, QUEUE_MAX_MESSAGES=2)
    for number in range(500):
        store.add_message(user_message(str(number % 7), number))

    stats = store.stats()

    assert stats.total_messages == 14  # two per user, well within the budget
    assert stats.total_bytes <= 20 * one
    assert len(store._ledger.entries) <= 20 * one // STALE_ENTRY_BYTES
