"""Fixed-window counters held in this process, never evicted while live.

Django's LocMemCache, which held the counters before, keeps 300 entries and
culls the oldest third when full: one request from each of 400 other
addresses reset a throttled caller. Here counters are grouped by window
(its length and its number); when a window ends its whole group is dropped,
and nothing else ever is. However many other callers are counted, a
caller's count lasts until its window ends.

Bound: ``max_counters`` live counters. A table full of live windows counts
an identity it has not seen yet on one of ``OVERFLOW_BUCKETS`` overflow
counters per rate (picked by a hash of the identity), each shared by the
newcomers that land on it until the window ends: they may be refused early
(it fails closed, for about one newcomer in a thousand per filling caller),
but no one already counted is reset. A counter costs about 100
bytes (an identity of ~20 characters, its count, its slot in the dict), so
100,000 of them hold about 10 MB at most (tests/sync/services/test_counter_table.py
measures it).
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from sync.core.rates import Rate

# Never a real identity: those start with a kind such as "user:" or "ip:".
OVERFLOW = "\x00overflow"
# Overflow counters per rate: whoever fills the table shares a counter with
# one newcomer in this many, not with all of them.
OVERFLOW_BUCKETS = 1024


@dataclass(frozen=True, slots=True)
class Hit:
    """The count in the current window, and when that window ends."""

    count: int
    retry_after: int  # whole seconds until the window ends

    def over(self, rate: Rate) -> bool:
        """True when this count is beyond the rate's limit."""
        return self.count > rate.limit

    def used_up(self, rate: Rate) -> bool:
        """True when one more event would be beyond the limit."""
        return self.count >= rate.limit


def window_of(now: float, rate: Rate) -> tuple[int, int]:
    """The number of the window `now` falls in, and its whole seconds left."""
    number = int(now // rate.window)
    return number, max(1, math.ceil((number + 1) * rate.window - now))


class CounterTable:
    """Counts events per identity in fixed windows; thread-safe, no I/O.

    Cheap enough to call on the event loop: a lock taken uncontended, two
    dict lookups, and now and then the drop of a window that ended.
    """

    def __init__(
        self, max_counters: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_counters = max_counters
        self.clock = clock
        self._lock = threading.Lock()
        # (window length, window number) -> identity -> count
        self._groups: dict[tuple[int, int], dict[str, int]] = {}
        self._size = 0
        self._next_end = math.inf  # when the earliest live window ends

    def hit(self, identity: str, rate: Rate, now: float | None = None) -> Hit:
        """Count one event for `identity`; its count in this window."""
        now = self.clock() if now is None else now
        number, retry_after = window_of(now, rate)
        with self._lock:
            counts = self._live_group(rate, number, now)
            key = self._key(counts, identity, rate)
            count = counts.get(key, 0) + 1
            counts[key] = count
            self._size += count == 1
        return Hit(count, retry_after)

    def give_back(self, identity: str, rate: Rate, now: float | None = None) -> None:
        """Uncount one event counted by `hit` in this window (a refund)."""
        now = self.clock() if now is None else now
        number, _ = window_of(now, rate)
        with self._lock:
            counts = self._groups.get((rate.window, number))
            if counts is None:
                return  # the window ended: nothing left to refund
            key = self._key(counts, identity, rate)
            if counts.get(key, 0) > 0:
                counts[key] -= 1

    def peek(self, identity: str, rate: Rate, now: float | None = None) -> Hit:
        """The count of `identity` in this window so far, counting nothing."""
        now = self.clock() if now is None else now
        number, retry_after = window_of(now, rate)
        with self._lock:
            counts = self._groups.get((rate.window, number), {})
            count = counts.get(self._key(counts, identity, rate), 0)
        return Hit(count, retry_after)

    def __len__(self) -> int:
        """Live counters (overflow counters included)."""
        return self._size

    def clear(self) -> None:
        """Forget every counter (tests)."""
        with self._lock:
            self._groups.clear()
            self._size = 0
            self._next_end = math.inf

    def _key(self, counts: dict[str, int], identity: str, rate: Rate) -> str:
        if identity in counts or self._size < self.max_counters:
            return identity
        bucket = zlib.crc32(identity.encode()) % OVERFLOW_BUCKETS
        return f"{OVERFLOW}:{rate.limit}:{bucket}"

    def _live_group(self, rate: Rate, number: int, now: float) -> dict[str, int]:
        if now >= self._next_end:
            self._drop_ended(now)
        counts = self._groups.get((rate.window, number))
        if counts is None:
            counts = self._groups[(rate.window, number)] = {}
            self._next_end = min(self._next_end, (number + 1) * rate.window)
        return counts

    def _drop_ended(self, now: float) -> None:
        for (length, number), counts in list(self._groups.items()):
            if (number + 1) * length <= now:
                self._size -= len(counts)
                del self._groups[(length, number)]
        self._next_end = min(
            ((number + 1) * length for length, number in self._groups),
            default=math.inf,
        )
