"""The in-process rate-limit counters: only ended windows are ever dropped."""

from __future__ import annotations

import tracemalloc

from sync.core.rates import Rate
from sync.services.counter_table import CounterTable
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


def test_a_full_table_counts_newcomers_together_and_keeps_everyone_counted():
    counters, _ = table(max_counters=3)
    for name in ("a", "b", "c"):
        counters.hit(f"user:{name}", MINUTE)
    assert counters.hit("user:a", MINUTE).count == 2  # counted ones go on

    newcomers = [counters.hit(f"user:new{index}", MINUTE) for index in range(6)]

    # One overflow counter for all of them: the sixth is over the limit of 5.
    assert [hit.count for hit in newcomers] == [1, 2, 3, 4, 5, 6]
    assert newcomers[-1].over(MINUTE)
    assert counters.peek("user:new99", MINUTE).count == 6  # fails closed
    assert counters.peek("user:a", MINUTE).count == 2
    assert len(counters) == 4  # three identities and the overflow counter


def test_room_comes_back_when_a_window_ends():
    counters, clock = table(max_counters=2)
    counters.hit("user:a", MINUTE)
    counters.hit("user:b", MINUTE)
    assert counters.hit("user:c", MINUTE).count == 1  # the overflow's first
    assert counters.hit("user:d", MINUTE).count == 2
    clock.advance(60)
    assert counters.hit("user:d", MINUTE).count == 1
    assert counters.hit("user:c", MINUTE).count == 1  # its own counter again


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
