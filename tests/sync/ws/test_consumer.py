"""The WebSocket endpoint (sync/ws/consumer.py): opening, delivery and resume,
statistics, limits and close codes; what a socket logs.

Every test talks to the real ASGI stack (config.asgi: switch, Origin check,
session and token auth, the consumer) through `WebsocketCommunicator`, and
asserts what a client on the other end of the socket would see.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token

from sync.services import get_realtime_sync, lifecycle, reset_services
from sync.store.redis import RedisMessageStore
from tests.conftest import PASSWORD, closed_port
from tests.contract import MESSAGE_KEYS
from tests.sync.ws.sockets import (
    assert_established,
    assert_open,
    assert_silent,
    broadcast,
    handshake,
    ids,
    receive_close_code,
    receive_frame,
    receive_frames,
    token_for,
    websocket_stats,
    with_extras,
)

# Helpers ----------------------------------------------------------------------


async def cancel_application(ws: WebsocketCommunicator) -> int:
    """Cancel the application as daphne does on shutdown; return the close code.

    The client answers the close, as a browser would, so the application ends
    at once instead of after its wait for that answer.
    """
    ws.future.cancel()
    code = await receive_close_code(ws)
    await ws.input_queue.put({"type": "websocket.disconnect", "code": code})
    with pytest.raises(asyncio.CancelledError):
        await ws.future
    return code


async def publish(user, number: int, type: str = "data.updated") -> dict:
    """A server message for `user` with payload {"n": number}."""
    return await get_realtime_sync().apublish(type, {"n": number}, user.pk)


# connection.established ----------------------------------------------------------


async def test_first_frame_is_connection_established(ws_connect, user):
    ws, first = await ws_connect(user)

    payload = assert_established(first, user, recovered=None)
    assert isinstance(payload["connectionId"], str)
    assert payload["connectionId"]
    assert payload["heartbeatInterval"] == 30_000
    head = get_realtime_sync().store.head(str(user.pk))
    assert payload["cursor"] == head.encode()
    await assert_silent(ws)


async def test_heartbeat_interval_is_reported_in_milliseconds(
    ws_connect, user, sync_config
):
    sync_config(HEARTBEAT_INTERVAL=7)

    _, first = await ws_connect(user)

    assert first["payload"]["heartbeatInterval"] == 7_000


async def test_every_connection_gets_its_own_connection_id(ws_connect, user):
    _, first = await ws_connect(user)
    _, second = await ws_connect(user)

    assert first["payload"]["connectionId"] != second["payload"]["connectionId"]


async def test_messages_published_before_connecting_are_not_sent(ws_connect, user):
    await publish(user, 1)
    await broadcast(2)

    ws, first = await ws_connect(user)

    assert_established(first, user, recovered=None)
    await assert_silent(ws)


# Cancelled by the server ------------------------------------------------------


async def test_cancelling_the_application_closes_with_1001(user):
    connected, ws = await handshake(f"token={await token_for(user)}")
    assert connected
    assert (await receive_frame(ws))["type"] == "connection.established"

    assert await cancel_application(ws) == 1001


# Delivery rules (SPEC §3) ----------------------------------------------------------


async def test_a_user_message_reaches_every_socket_of_that_user_only(
    ws_connect, user, other_user
):
    first_tab, _ = await ws_connect(user)
    second_tab, _ = await ws_connect(user, query="topics=alpha")
    stranger, _ = await ws_connect(other_user)

    message = await publish(user, 1, type="notification.new")

    for ws in (first_tab, second_tab):
        received = await receive_frame(ws)
        assert received.keys() == MESSAGE_KEYS
        assert received["id"] == message["id"]
        assert received["type"] == "notification.new"
        assert received["payload"] == {"n": 1}
        assert received["userId"] == str(user.pk)
        assert received["timestamp"] == message["timestamp"]
        await assert_silent(ws)
    await assert_silent(stranger)


async def test_a_broadcast_reaches_everyone(ws_connect, user, other_user):
    sockets = [
        (await ws_connect(user))[0],
        (await ws_connect(other_user))[0],
        (await ws_connect(other_user, query="topics=alpha"))[0],
    ]

    message = await broadcast(1)

    for ws in sockets:
        received = await receive_frame(ws)
        assert received["id"] == message["id"]
        assert received["userId"] is None
        assert received["topics"] == []
        await assert_silent(ws)


async def test_a_topic_broadcast_reaches_subscribers_only_and_once(
    ws_connect, user, other_user
):
    by_query, _ = await ws_connect(user, query="topics=alpha")
    by_frame, _ = await ws_connect(other_user)
    await by_frame.send_json_to({"type": "subscribe", "payload": {"topics": ["beta"]}})
    await receive_frame(by_frame)
    both, _ = await ws_connect(user, query="topics=alpha,beta")
    elsewhere, _ = await ws_connect(other_user, query="topics=gamma")
    unsubscribed, _ = await ws_connect(user)

    message = await broadcast(1, topics=["alpha", "beta"])

    for ws in (by_query, by_frame, both):
        received = await receive_frame(ws)
        assert received["id"] == message["id"]
        assert received["topics"] == ["alpha", "beta"]
        await assert_silent(ws)
    await assert_silent(elsewhere)
    await assert_silent(unsubscribed)


async def test_live_messages_arrive_in_publication_order_without_gaps(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha")
    published = []
    for number in range(6):
        published.append(await publish(user, number))
        published.append(await broadcast(number, topics=["alpha"] if number else None))

    received = await receive_frames(ws, len(published))

    assert ids(received) == ids(published)
    await assert_silent(ws)


# Resume by cursor ------------------------------------------------------------------


async def test_resume_replays_exactly_the_missed_messages_then_live_ones(
    ws_connect, user
):
    ws, _ = await ws_connect(user)
    seen = [await publish(user, 1), await broadcast(2), await publish(user, 3)]
    received = await receive_frames(ws, 3)
    assert ids(received) == ids(seen)
    await ws.disconnect()
    missed = [
        await broadcast(4),
        await publish(user, 5),
        await publish(user, 6),
        await broadcast(7),
    ]

    ws, first = await ws_connect(user, query=f"cursor={received[-1]['cursor']}")

    assert_established(first, user, recovered=True)
    replayed = await receive_frames(ws, len(missed))
    assert ids(replayed) == ids(missed)
    assert all(message.keys() == MESSAGE_KEYS for message in replayed)
    await assert_silent(ws)
    live = await publish(user, 8)
    assert ids([await receive_frame(ws)]) == [live["id"]]
    await assert_silent(ws)


async def test_resume_after_a_broadcast_cursor(ws_connect, user):
    ws, _ = await ws_connect(user)
    await publish(user, 1)
    last = await broadcast(2)
    received = await receive_frames(ws, 2)
    assert received[-1]["id"] == last["id"]
    await ws.disconnect()
    missed = [await publish(user, 3), await broadcast(4)]

    ws, first = await ws_connect(user, query=f"cursor={received[-1]['cursor']}")

    assert_established(first, user, recovered=True)
    assert ids(await receive_frames(ws, 2)) == ids(missed)
    await assert_silent(ws)


async def test_resume_with_nothing_missed_is_recovered(ws_connect, user):
    ws, first = await ws_connect(user)
    await ws.disconnect()

    ws, first = await ws_connect(user, query=f"cursor={first['payload']['cursor']}")

    assert_established(first, user, recovered=True)
    await assert_silent(ws)


async def test_the_established_cursor_resumes_after_it(ws_connect, user):
    ws, first = await ws_connect(user)
    await ws.disconnect()
    missed = [await publish(user, 1), await broadcast(2)]

    ws, again = await ws_connect(user, query=f"cursor={first['payload']['cursor']}")

    assert_established(again, user, recovered=True)
    assert ids(await receive_frames(ws, 2)) == ids(missed)
    await assert_silent(ws)


async def test_resume_replays_missed_topic_broadcasts_of_its_topics(ws_connect, user):
    ws, first = await ws_connect(user, query="topics=alpha")
    await ws.disconnect()
    wanted = await broadcast(1, topics=["alpha"])
    await broadcast(2, topics=["beta"])

    ws, _ = await ws_connect(
        user, query=f"topics=alpha&cursor={first['payload']['cursor']}"
    )

    assert ids([await receive_frame(ws)]) == [wanted["id"]]
    await assert_silent(ws)


async def test_resume_does_not_replay_other_users_messages(
    ws_connect, user, other_user
):
    ws, first = await ws_connect(user)
    await ws.disconnect()
    await publish(other_user, 1)
    mine = await publish(user, 2)

    ws, _ = await ws_connect(user, query=f"cursor={first['payload']['cursor']}")

    assert ids([await receive_frame(ws)]) == [mine["id"]]
    await assert_silent(ws)


async def test_messages_published_during_the_replay_arrive_once(
    ws_connect, user, monkeypatch
):
    ws, first = await ws_connect(user)
    await ws.disconnect()
    missed = [await publish(user, 1), await broadcast(2)]
    store = get_realtime_sync().store
    read = store.aread
    during: list[dict] = []

    async def read_while_publishing(user_id, **options):
        # One message lands before the store is read, one after: the first
        # comes both from the store and live, the second only live.
        if not during:
            during.append(await publish(user, 3))
            result = await read(user_id, **options)
            during.append(await broadcast(4))
            return result
        return await read(user_id, **options)

    monkeypatch.setattr(store, "aread", read_while_publishing)

    ws, again = await ws_connect(user, query=f"cursor={first['payload']['cursor']}")

    assert_established(again, user, recovered=True)
    expected = missed + during
    assert ids(await receive_frames(ws, len(expected))) == ids(expected)
    await assert_silent(ws)


async def test_a_cursor_from_another_epoch_replays_everything_unrecovered(
    ws_connect, user, other_user
):
    held = [await publish(user, 1), await broadcast(2), await publish(user, 3)]
    await publish(other_user, 4)

    ws, first = await ws_connect(user, query="cursor=0ther-1-0")

    assert_established(first, user, recovered=False)
    assert ids(await receive_frames(ws, len(held))) == ids(held)
    await assert_silent(ws)
    live = await publish(user, 5)
    assert ids([await receive_frame(ws)]) == [live["id"]]


async def test_a_cursor_from_the_future_replays_everything_unrecovered(
    ws_connect, user
):
    held = await publish(user, 1)
    epoch = get_realtime_sync().store.epoch

    ws, first = await ws_connect(user, query=f"cursor={epoch}-99-0")

    assert_established(first, user, recovered=False)
    assert ids([await receive_frame(ws)]) == [held["id"]]
    await assert_silent(ws)


async def test_resume_beyond_the_retained_history_is_unrecovered(
    ws_connect, user, sync_config
):
    sync_config(QUEUE_MAX_MESSAGES=3)
    ws, _ = await ws_connect(user)
    await publish(user, 0)
    cursor = (await receive_frame(ws))["cursor"]
    await ws.disconnect()
    published = [await publish(user, number) for number in range(1, 6)]

    ws, first = await ws_connect(user, query=f"cursor={cursor}")

    assert_established(first, user, recovered=False)
    assert ids(await receive_frames(ws, 3)) == ids(published[-3:])
    await assert_silent(ws)


# Statistics ------------------------------------------------------------------------


async def test_stats_follow_connections_and_subscriptions(ws_connect, user, other_user):
    assert websocket_stats() == {
        "activeConnections": 0,
        "totalConnections": 0,
        "subscriptions": 0,
    }
    first, _ = await ws_connect(user, query="topics=alpha,beta")
    second, _ = await ws_connect(other_user)
    assert websocket_stats() == {
        "activeConnections": 2,
        "totalConnections": 2,
        "subscriptions": 2,
    }

    await second.send_json_to({"type": "subscribe", "payload": {"topics": ["gamma"]}})
    await receive_frame(second)
    assert websocket_stats()["subscriptions"] == 3
    await first.send_json_to({"type": "unsubscribe", "payload": {"topics": ["beta"]}})
    await receive_frame(first)
    assert websocket_stats()["subscriptions"] == 2

    await first.disconnect()
    assert websocket_stats() == {
        "activeConnections": 1,
        "totalConnections": 2,
        "subscriptions": 1,
    }
    await second.disconnect()
    assert websocket_stats() == {
        "activeConnections": 0,
        "totalConnections": 2,
        "subscriptions": 0,
    }


async def test_stats_go_down_when_the_application_is_cancelled(user):
    connected, ws = await handshake(f"token={await token_for(user)}&topics=alpha")
    assert connected
    await receive_frame(ws)
    assert websocket_stats()["activeConnections"] == 1
    assert websocket_stats()["subscriptions"] == 1

    await cancel_application(ws)

    assert websocket_stats() == {
        "activeConnections": 0,
        "totalConnections": 1,
        "subscriptions": 0,
    }


async def test_refused_connections_are_not_counted(ws_connect, user):
    await ws_connect()
    await ws_connect(user, query="cursor=garbage")

    assert websocket_stats()["totalConnections"] == 0


async def test_a_cancelled_socket_no_longer_receives(ws_connect, user):
    connected, ws = await handshake(f"token={await token_for(user)}")
    assert connected
    await receive_frame(ws)
    survivor, _ = await ws_connect(user)
    await cancel_application(ws)

    message = await publish(user, 1)

    assert ids([await receive_frame(survivor)]) == [message["id"]]
    assert ws.output_queue.empty()


async def test_frames_cause_no_database_housekeeping(ws_connect, user, monkeypatch):
    # Channels would hop through the sync thread before every event.
    calls = []

    async def counting():
        calls.append(1)

    monkeypatch.setattr("channels.consumer.aclose_old_connections", counting)
    ws, _ = await ws_connect(user)
    for number in range(5):
        await ws.send_json_to({"type": "ping", "id": str(number)})
        assert (await receive_frame(ws))["type"] == "pong"

    assert calls == []


# Replays page by page (abuse bounds) ------------------------------------------


@pytest.fixture
def page_reads(monkeypatch):
    """Counts the store pages read by sockets, and their byte bounds."""
    from sync.services.streams import ReaderStream

    reads: list[int] = []
    read_page = ReaderStream.read_page

    async def counted(stream, max_bytes):
        reads.append(max_bytes)
        return await read_page(stream, max_bytes)

    monkeypatch.setattr(ReaderStream, "read_page", counted)
    return reads


async def test_a_long_replay_comes_page_by_page_in_order(
    ws_connect, user, sync_config, page_reads
):
    # Pages of 64 kB: 30 messages of 20 kB take 10 pages, all delivered once.
    sync_config(POLL_MAX_BYTES=65_536, WS_MAX_PENDING_BYTES=262_144)
    sync = get_realtime_sync()
    for number in range(30):
        payload = {"n": number, "blob": "x" * 20_000}
        await sync.apublish("data.updated", payload, user.pk)

    ws, first = await ws_connect(user, query="cursor=x-0-0")

    assert_established(first, user, recovered=False)
    replayed = await receive_frames(ws, 30)
    assert [message["payload"]["n"] for message in replayed] == list(range(30))
    assert len(page_reads) >= 10
    assert set(page_reads) == {65_536}
    await assert_silent(ws)


async def test_a_replay_whose_client_stops_reading_closes_4413_and_reads_no_more(
    ws_connect, user, sync_config, page_reads, monkeypatch
):
    from sync.ws.outbox import Outbox

    sync_config(POLL_MAX_BYTES=65_536, WS_MAX_PENDING_BYTES=262_144)
    sync = get_realtime_sync()
    for number in range(30):
        payload = {"n": number, "blob": "x" * 20_000}
        await sync.apublish("data.updated", payload, user.pk)

    async def never_room(self, room, timeout):
        return False  # the client reads nothing for two heartbeats

    monkeypatch.setattr(Outbox, "wait_for_room", never_room)
    ws, _ = await ws_connect(user, query="cursor=x-0-0")

    frames = [await receive_frame(ws) for _ in range(3)]  # the first page only
    assert [frame["payload"]["n"] for frame in frames] == [0, 1, 2]
    assert await receive_close_code(ws) == 4413
    assert len(page_reads) == 1


# Sockets opened by session (for the revocation tests below) ----------


@pytest.fixture
def live_session_socket(ws_connect):
    """``await live_session_socket(user)``: a socket authenticated by session."""

    async def open_socket(user):
        client = Client()
        assert await client.alogin(username=user.username, password=PASSWORD)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())
        ws, first = await ws_connect(headers=[cookie])
        assert first["type"] == "connection.established"
        return ws

    return open_socket


# Open sockets per user (SPEC §5: 4429 past SYNC_WS_MAX_CONNECTIONS_PER_USER) --


async def test_open_sockets_beyond_the_per_user_limit_close_4429(
    ws_connect, user, other_user, sync_config
):
    sync_config(WS_MAX_CONNECTIONS_PER_USER=2)
    await ws_connect(user)
    await ws_connect(user)

    _, refused = await ws_connect(user)
    _, others = await ws_connect(other_user)

    assert refused is None  # closed instead of established
    assert others["type"] == "connection.established"
    assert get_realtime_sync().get_stats()["websocket"]["activeConnections"] == 3


async def test_a_user_who_reconnects_often_is_never_locked_out(
    ws_connect, user, sync_config
):
    # The old limit counted opens in a 15-minute window, not open sockets.
    sync_config(WS_MAX_CONNECTIONS_PER_USER=2, RATE_LIMIT="3/15m")
    for _ in range(6):
        ws, first = await ws_connect(user)
        assert first["type"] == "connection.established"
        await ws.disconnect()


# Revocation (SPEC §5: 4401 at once when changed through a server process) -----


async def test_deactivating_the_user_closes_its_sockets_4401(ws_connect, user):
    ws, _ = await ws_connect(user)
    user.is_active = False
    await user.asave()
    assert await receive_close_code(ws) == 4401


async def test_deleting_the_user_closes_its_sockets_4401(ws_connect, user):
    ws, _ = await ws_connect(user)
    await user.adelete()
    assert await receive_close_code(ws) == 4401


async def test_deleting_the_token_closes_only_the_sockets_it_opened(
    ws_connect, user, live_session_socket
):
    by_token, _ = await ws_connect(user)
    by_session = await live_session_socket(user)

    await Token.objects.filter(user=user).adelete()

    assert await receive_close_code(by_token) == 4401
    await assert_open(by_session)


async def test_authorization_header_opens_a_socket_and_its_deletion_closes_it(user):
    key = await token_for(user)
    connected, ws = await handshake(
        headers=[(b"authorization", f"Token {key}".encode())]
    )
    assert connected
    assert (await receive_frame(ws))["type"] == "connection.established"

    await Token.objects.filter(key=key).adelete()

    assert await receive_close_code(ws) == 4401
    await ws.disconnect()


# Connecting once shutdown has begun (found by the two-instance soak) --


@pytest.fixture
def no_shutdown():
    lifecycle.reset()
    yield
    lifecycle.reset()


@pytest.mark.usefixtures("no_shutdown")
async def test_a_socket_connecting_during_shutdown_is_closed_with_1001(
    ws_connect, user
):
    lifecycle.begin_shutdown()

    ws, first = await ws_connect(user)

    assert first is None  # closed before connection.established
    assert ws.close_frame == {"type": "websocket.close", "code": 1001}


# What the WebSocket consumer logs --------------------------------------------------


MARKER = "payload-marker-7f3a"


async def test_a_socket_logs_its_opening_refused_frames_and_close_without_payloads(
    ws_connect, user, caplog
):
    caplog.set_level(logging.DEBUG)
    ws, established = await ws_connect(user)
    connection_id = established["payload"]["connectionId"]

    await ws.send_json_to({"type": "chat.note", "payload": {"text": MARKER}})
    await ws.receive_json_from(2)  # ack
    await ws.receive_json_from(2)  # its own copy
    await ws.send_json_to({"type": "DATA.updated", "payload": {"text": MARKER}})
    refused = await ws.receive_json_from(2)
    await get_realtime_sync().apublish("notification.new", {"text": MARKER}, user.pk)
    await ws.receive_json_from(2)
    await ws.disconnect(code=1000)

    [opened] = with_extras(caplog, "websocket connected")
    [frame] = with_extras(caplog, "frame refused")
    [closed] = with_extras(caplog, "websocket closed")
    assert refused["payload"]["code"] == "reserved_type"
    assert (opened.connection_id, opened.user_id) == (connection_id, user.pk)
    assert (frame.connection_id, frame.code) == (connection_id, "reserved_type")
    assert (closed.connection_id, closed.user_id, closed.code) == (
        connection_id,
        user.pk,
        1000,
    )
    assert opened.levelno == closed.levelno == logging.INFO
    assert MARKER not in caplog.text
    assert all(MARKER not in repr(vars(entry)) for entry in caplog.records)


async def test_a_frame_flood_is_logged_once_per_window(
    ws_connect, user, caplog, sync_config
):
    caplog.set_level(logging.INFO)
    sync_config(WS_RATE_LIMIT="3/10s")
    ws, _ = await ws_connect(user)

    for _ in range(5):  # 3 allowed, then 2 refused (6 would close 4429)
        await ws.send_json_to({"type": "ping"})
    replies = [await ws.receive_json_from(2) for _ in range(5)]

    throttled = [r for r in replies if r.get("payload", {}).get("code") == "throttled"]
    assert len(throttled) == 2
    refusals = with_extras(caplog, "frame refused")
    assert [entry.code for entry in refusals] == ["throttled"]


async def test_refused_sockets_are_logged_with_their_close_code(
    ws_connect, user, caplog, sync_config
):
    caplog.set_level(logging.INFO)
    sync_config(WS_MAX_CONNECTIONS_PER_USER=1)
    await ws_connect(user)

    _, anonymous = await ws_connect(None)
    _, one_too_many = await ws_connect(user)
    _, bad_cursor = await ws_connect(user, query="cursor=nonsense")

    refusals = with_extras(caplog, "websocket refused")
    assert (anonymous, one_too_many) == (None, None)
    assert bad_cursor["type"] == "error"
    assert [(entry.code, entry.reason) for entry in refusals] == [
        (4401, "not_authenticated"),
        (4429, "too_many_connections"),
        (4400, "invalid_cursor"),
    ]
    assert [entry.user_id for entry in refusals] == [None, user.pk, user.pk]
    assert all(entry.connection_id for entry in refusals)


# A store out of reach ----------------------------------------------------------


async def test_a_socket_gets_an_error_frame_then_1011_when_the_store_is_unreachable(
    ws_connect, user, clock
):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    reset_services(RedisMessageStore(url, prefix="unreachable:", clock=clock))

    ws, first = await ws_connect(user)

    assert first["type"] == "error"
    assert first["payload"]["code"] == "store_unavailable"
    assert await ws.receive_output(2) == {"type": "websocket.close", "code": 1011}
