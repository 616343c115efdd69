"""The in-process rate-limit counters (sync/services/counter_table.py): only
ended windows are ever dropped.
"""

from __future__ import annotations

import tracemalloc
import zlib

from sync.core.rates import Rate
from sync.services.counter_table import OVERFLOW_BUCKETS, CounterTable
from tests.conftest import FakeClock

MINUTE = Rate(limit=5, window=60)
HOUR = Rate(limit=5, window=3600)
# A whole number of hours: every test starts at the beginning of its windows.
START = 3600 * 480_000.0


def table(max_counters: int = 100) -> tuple[CounterTable, FakeClock]:
    clock = FakeClock(start=START)
    return CounterTable(max_counters, clock=clock), clock


def test_counts_per_identity_until_the_window_ends():
    counters, clock = table()
    assert [counters.hit("user:1", MINUTE).count for _ in range(3)] == [1, 2, 3]
    assert counters.hit("user:2", MINUTE).count == 1
    clock.advance(59)
    hit = counters.hit("user:1", MINUTE)
    assert (hit.count, hit.retry_after) == (4, 1)
    clock.advance(1)
    assert counters.hit("user:1", MINUTE).count == 1


def test_a_crowd_of_other_identities_never_resets_a_live_count():
    counters, clock = table(max_counters=100_000)
    for _ in range(6):
        counters.hit("ip:10.0.0.1", HOUR)
    for index in range(5000):
        counters.hit(f"ip:10.1.{index // 250}.{index % 250}", HOUR)
        clock.advance(0.1)
    assert counters.peek("ip:10.0.0.1", HOUR).over(HOUR)
    assert counters.hit("ip:10.0.0.1", HOUR).count == 7


def test_only_windows_that_ended_are_dropped():
    counters, clock = table()
    counters.hit("user:1", MINUTE)
    counters.hit("user:1", HOUR)
    counters.hit("user:2", HOUR)
    assert len(counters) == 3
    clock.advance(60)
    counters.hit("user:3", MINUTE)  # any hit sweeps the windows that ended
    assert len(counters) == 3  # the minute's user:1 went, user:3 came
    assert counters.peek("user:1", HOUR).count == 1
    assert counters.peek("user:1", MINUTE).count == 0
    clock.advance(3600)
    counters.hit("user:3", MINUTE)
    assert len(counters) == 1


def same_bucket(count: int) -> list[str]:
    """`count` newcomer identities that share one overflow counter."""
    buckets: dict[int, list[str]] = {}
    index = 0
    while True:
        name = f"user:new{index}"
        bucket = buckets.setdefault(zlib.crc32(name.encode()) % OVERFLOW_BUCKETS, [])
        bucket.append(name)
        if len(bucket) == count:
            return bucket
        index += 1


def test_a_full_table_counts_newcomers_on_shared_counters_and_keeps_everyone():
    counters, _ = table(max_counters=3)
    for name in ("a", "b", "c"):
        counters.hit(f"user:{name}", MINUTE)
    assert counters.hit("user:a", MINUTE).count == 2  # counted ones go on

    sharing = same_bucket(7)
    newcomers = [counters.hit(name, MINUTE) for name in sharing[:6]]

    # Newcomers landing on one overflow counter share it: the sixth is over
    # the limit of 5, and so is the next one there (it fails closed).
    assert [hit.count for hit in newcomers] == [1, 2, 3, 4, 5, 6]
    assert newcomers[-1].over(MINUTE)
    assert counters.peek(sharing[6], MINUTE).count == 6
    assert counters.peek("user:a", MINUTE).count == 2
    assert len(counters) == 4  # three identities and one overflow counter


def test_whoever_fills_the_table_shares_a_counter_with_few_newcomers():
    counters, _ = table(max_counters=1)
    counters.hit("user:first", MINUTE)
    for index in range(10_000):
        counters.hit(f"user:flood{index}", MINUTE)

    counts = [counters.peek(f"user:late{index}", MINUTE).count for index in range(200)]

    # 10,000 newcomers spread over 1,024 counters: about 10 each, so a late
    # newcomer meets a counter near 10, never the whole flood.
    assert max(counts) < 30


def test_room_comes_back_when_a_window_ends():
    counters, clock = table(max_counters=2)
    counters.hit("user:a", MINUTE)
    counters.hit("user:b", MINUTE)
    first, second = same_bucket(2)
    assert counters.hit(first, MINUTE).count == 1  # an overflow counter's first
    assert counters.hit(second, MINUTE).count == 2
    clock.advance(60)
    assert counters.hit(second, MINUTE).count == 1
    assert counters.hit(first, MINUTE).count == 1  # its own counter again


def test_a_count_given_back_is_no_longer_counted():
    counters, _ = table()
    counters.hit("ip:1", MINUTE)
    counters.hit("ip:1", MINUTE)
    counters.give_back("ip:1", MINUTE)
    assert counters.peek("ip:1", MINUTE).count == 1
    counters.give_back("ip:1", MINUTE)
    counters.give_back("ip:1", MINUTE)  # never below zero
    assert counters.peek("ip:1", MINUTE).count == 0


def test_peek_counts_nothing():
    counters, _ = table()
    assert counters.peek("user:1", MINUTE).count == 0
    counters.hit("user:1", MINUTE)
    assert counters.peek("user:1", MINUTE).count == 1
    assert counters.peek("user:1", MINUTE).count == 1
    assert len(counters) == 1


def test_windows_are_aligned_to_their_length_on_the_clock():
    counters, clock = table()
    clock.advance(45)
    hit = counters.hit("user:1", MINUTE)
    assert hit.retry_after == 15
    clock.advance(15)
    assert counters.hit("user:1", MINUTE).count == 1


def test_a_counter_holds_about_a_hundred_bytes():
    # What the README quotes: 100,000 counters, the default bound, ~10 MB.
    counters, _ = table(max_counters=20_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(20_000):
        for _ in range(2):  # each request builds its identity anew
            counters.hit(f"ip:203.0.{index >> 8}.{index & 255}", HOUR)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"\n20,000 counters hold {held / 1e6:.1f} MB ({held / 2e4:.0f} B each)")
    assert len(counters) == 20_000
    assert held < 20_000 * 200
