"""What only the in-memory store does: an epoch per process, a byte budget.

The contract it shares with the Redis backend is in test_store_contract.py.
"""

from __future__ import annotations

import pytest

from sync.services.realtime import build_message
from sync.store.base import message_size
from sync.store.memory import STALE_ENTRY_BYTES, MemoryMessageStore


def user_message(user_id: str, number: int) -> dict:
    return build_message("item.added", {"n": number}, user_id=user_id)


def broadcast_message(number: int, topics=()) -> dict:
    return build_message("announcement", {"n": number}, topics=topics)


def numbers(messages: list[dict]) -> list[int]:
    return [message["payload"]["n"] for message in messages]


def test_a_new_store_has_a_new_epoch():
    assert MemoryMessageStore().epoch != MemoryMessageStore().epoch


def test_the_store_drops_its_oldest_messages_past_its_byte_budget(store, sync_config):
    one = message_size(user_message("1", 0))
    sync_config(STORE_MAX_BYTES=3 * one)
    before = {user: store.head(user) for user in ("1", "2")}
    store.add_message(user_message("1", 0))
    store.add_message(user_message("2", 1))
    store.add_message(user_message("1", 2))
    store.add_message(user_message("2", 3))  # the store's oldest (0) goes

    first, second = store.read("1", cursor=before["1"]), store.read("2", since=0)

    assert numbers(first.parse_messages()) == [2]
    assert first.gap
    assert numbers(second.parse_messages()) == [1, 3]
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


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"a": [{}] * 9_997}, id="dict-heavy"),
        pytest.param({"s": "é" * 20_000}, id="utf8-text"),
        pytest.param({"n": 1}, id="tiny"),
        pytest.param({f"k{n}": [n, {"v": n}] for n in range(1_000)}, id="mixed"),
    ],
)
def test_what_the_store_charges_is_what_it_holds_in_memory(payload):
    # The byte budget bounds real memory only if the charge follows it,
    # whatever the payload's shape (issue 15: a dict-heavy payload held 24x
    # its charge as parsed objects).
    import tracemalloc

    store = MemoryMessageStore()
    messages = [
        build_message("item.added", payload, user_id=str(n % 7)) for n in range(200)
    ]
    drafts = [message.draft() for message in messages]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for draft in drafts:
        store.add_message(draft)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    charged = store.stats().total_bytes
    assert held <= charged * 1.1
    assert held >= charged * 0.5  # the charge is no gross overestimate either
