"""Issue 6 through the API and the socket: positions are read-only, and every
loss the store reports is one the reader really had (and every real one is
reported): clock poisoning, restarts, dropped topic broadcasts, memory bound.
"""

from __future__ import annotations

import time

import pytest
from channels.layers import get_channel_layer

from sync.services import get_realtime_sync, reset_services
from sync.services.realtime import build_message
from sync.store.base import message_size

POLL = "/api/sync/poll"


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    """Queues left by an earlier test belong to that test's closed loop."""
    await get_channel_layer().flush()


def now_ms() -> int:
    return int(time.time() * 1000)


def poll(client, **params) -> dict:
    response = client.get(POLL, params)
    assert response.status_code == 200, response.content
    return response.json()


def payloads(body_or_messages) -> list[dict]:
    messages = body_or_messages
    if isinstance(body_or_messages, dict):
        messages = body_or_messages["messages"]
    return [message["payload"] for message in messages]


# Clock poisoning ------------------------------------------------------------------


def test_a_since_from_the_far_future_is_refused(api_client):
    response = api_client.get(POLL, {"since": "999999999999999999"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_since"


def test_a_since_a_little_ahead_of_the_clock_is_accepted(api_client):
    body = poll(api_client, since=now_ms() + 30_000)

    assert body["messages"] == []
    assert body["gap"] is False


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
    time.sleep(0.01)
    reset_services()  # the in-memory store restarts: its history is gone
    get_realtime_sync().publish("item.added", {"n": 1}, user.pk)

    after = poll(api_client, since=old["timestamp"])

    assert payloads(after) == [{"n": 1}]
    assert after["gap"] is True
    assert poll(api_client, since=0)["gap"] is False
    assert poll(api_client, since=after["timestamp"])["gap"] is False


async def test_a_socket_resumed_across_a_restart_receives_every_later_broadcast(
    ws_connect, user
):
    sync = get_realtime_sync()
    for n in range(3):
        await sync.abroadcast("announcement", {"n": n})
    old_epoch_cursor = "0ther-5-5000"  # far ahead of the new broadcast sequence

    ws, first = await ws_connect(user, query=f"cursor={old_epoch_cursor}")
    replayed = [await ws.receive_json_from(1) for _ in range(3)]
    for n in range(3, 6):
        await sync.abroadcast("announcement", {"n": n})
    live = [await ws.receive_json_from(1) for _ in range(3)]

    assert first["payload"]["recovered"] is False
    assert payloads(replayed) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert payloads(live) == [{"n": 3}, {"n": 4}, {"n": 5}]


# Dropped broadcasts of other topics -------------------------------------------------


async def test_an_expired_topic_broadcast_does_not_close_other_sockets(
    ws_connect, user, store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    sync = get_realtime_sync()
    ws, _ = await ws_connect(user, query="topics=ops")
    await sync.abroadcast("announcement", {"n": 0}, topics=["sales"])
    clock.advance(11)  # the sales broadcast expires
    await sync.abroadcast("announcement", {"n": 1})

    news = await ws.receive_json_from(1)
    await ws.send_json_to({"type": "ping", "id": "p"})
    pong = await ws.receive_json_from(1)
    _, resumed = await ws_connect(user, query=f"cursor={news['cursor']}")

    assert news["payload"] == {"n": 1}
    assert pong["type"] == "pong"  # still open: no 4409
    assert resumed["payload"]["recovered"] is True


def test_an_expired_topic_broadcast_is_no_gap_for_pollers_of_other_topics(
    api_client, user, store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    start = poll(api_client, topics="ops")
    sync = get_realtime_sync()
    sync.broadcast("announcement", {"n": 0}, topics=["sales"])
    clock.advance(11)
    sync.broadcast("announcement", {"n": 1})

    for position in ({"cursor": start["cursor"]}, {"since": start["timestamp"]}):
        body = poll(api_client, topics="ops", **position)
        assert payloads(body) == [{"n": 1}]
        assert body["gap"] is False
        assert poll(api_client, topics="sales", **position)["gap"] is True


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
