"""What only the in-memory store does (sync/store/memory.py): an epoch per
process, a byte budget, and what readers see of both.

The contract it shares with the Redis backend is in test_store_contract.py.
"""

from __future__ import annotations

import time

import pytest

from sync.services import get_realtime_sync, reset_services
from sync.services.realtime import build_message
from sync.store.base import message_size
from sync.store.memory import STALE_ENTRY_BYTES, MemoryMessageStore
from tests.sync.http.api_calls import POLL, now_ms, payloads, poll


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


# Clock poisoning ------------------------------------------------------------------


def test_one_users_since_changes_nothing_for_another(
    api_client, other_client, other_user
):
    api_client.get(POLL, {"since": "999999999999999999"})
    poll(api_client, since=now_ms() + 59_000)  # as far ahead as is allowed
    start = poll(other_client)

    before = now_ms()
    get_realtime_sync().publish("item.added", {"n": 1}, other_user.pk)
    later = poll(other_client, since=start["timestamp"])

    assert payloads(later) == [{"n": 1}]
    assert before <= later["messages"][0]["timestamp"] <= now_ms()
    assert poll(other_client, since=later["timestamp"])["messages"] == []


# Restarts -----------------------------------------------------------------------


def test_a_since_from_before_a_restart_reports_a_gap(api_client, user):
    old = poll(api_client)
    while now_ms() < old["timestamp"] + 2:  # the start a since predates (Epoch)
        time.sleep(0.001)
    reset_services()  # the in-memory store restarts: its history is gone
    get_realtime_sync().publish("item.added", {"n": 1}, user.pk)

    after = poll(api_client, since=old["timestamp"])

    assert payloads(after) == [{"n": 1}]
    assert after["gap"] is True
    assert poll(api_client, since=0)["gap"] is False
    assert poll(api_client, since=after["timestamp"])["gap"] is False


# The store's byte budget ------------------------------------------------------------


def test_past_the_byte_budget_the_oldest_messages_go_and_readers_see_a_gap(
    api_client, user, other_user, store, sync_config
):
    one = message_size(build_message("item.added", {"n": 0}, user_id=user.pk))
    sync_config(STORE_MAX_BYTES=4 * one)
    start = poll(api_client)
    sync = get_realtime_sync()
    sync.publish("item.added", {"n": 0}, user.pk)
    for n in range(1, 5):
        sync.publish("item.added", {"n": n}, other_user.pk)

    by_cursor = poll(api_client, cursor=start["cursor"])
    by_since = poll(api_client, since=start["timestamp"])

    assert by_cursor["messages"] == by_since["messages"] == []
    assert by_cursor["gap"] is True
    assert by_since["gap"] is True


async def test_a_socket_behind_the_byte_budget_resumes_unrecovered(
    ws_connect, user, other_user, store, sync_config
):
    one = message_size(build_message("item.added", {"n": 0}, user_id=user.pk))
    sync_config(STORE_MAX_BYTES=4 * one)
    sync = get_realtime_sync()
    ws, first = await ws_connect(user)
    await ws.disconnect()
    await sync.apublish("item.added", {"n": 0}, user.pk)
    for n in range(1, 5):
        await sync.apublish("item.added", {"n": n}, other_user.pk)

    ws, again = await ws_connect(user, query=f"cursor={first['payload']['cursor']}")

    assert again["payload"]["recovered"] is False
    assert await ws.receive_nothing(0.1)
