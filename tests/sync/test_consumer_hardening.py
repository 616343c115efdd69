"""Regressions of the hardening issue on the WebSocket side (SPEC §3, §5).

Each test fails on the code before the fix: open-socket limits, revocation,
handlers off the receive path, subscribe/unsubscribe failures, topic
authorization, and the fan-out's per-group isolation.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from sync.services import get_realtime_sync, message_handler
from sync.services.handlers import unregister
from sync.services.streams import ReaderStream
from sync.store.paging import ReadResult
from tests.conftest import PASSWORD
from tests.sync.test_consumers import (
    assert_error,
    assert_open,
    handshake,
    receive_close_code,
    receive_frame,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    await get_channel_layer().flush()


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


def forbid_secret_topics(user, topic: str) -> bool:
    """A topic authorizer for tests: `secret.*` is refused to everyone."""
    return not topic.startswith("secret")


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


async def test_a_revocation_no_signal_reported_closes_within_a_heartbeat(
    ws_connect, user, sync_config
):
    # queryset.update() sends no signal, like a change made on another host.
    sync_config(HEARTBEAT_INTERVAL=1)
    ws, _ = await ws_connect(user)
    await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)

    started = time.monotonic()
    frame = await ws.receive_output(3)
    while frame["type"] == "websocket.send":  # the last pings before the check
        frame = await ws.receive_output(3)
    assert frame == {"type": "websocket.close", "code": 4401}
    assert time.monotonic() - started < 2.5


# Server-side handlers run after the ack, off the receive path -----------------


async def test_a_slow_sync_handler_delays_neither_the_ack_nor_other_frames(
    ws_connect, user
):
    release = threading.Event()
    calls: list[str] = []

    def slow(message, sender):
        calls.append(message["id"])
        release.wait(5)

    message_handler("chat.slow")(slow)
    try:
        ws, _ = await ws_connect(user)
        await ws.send_json_to({"type": "chat.slow", "id": "a"})
        first = await receive_frame(ws)  # the message itself, to all tabs
        second = await receive_frame(ws)
        assert {first["type"], second["type"]} == {"chat.slow", "ack"}
        await assert_open(ws)  # answered while the handler still runs
        await ws.send_json_to({"type": "chat.slow", "id": "b"})
        frames = [await receive_frame(ws), await receive_frame(ws)]
        assert "ack" in {frame["type"] for frame in frames}
        release.set()
        for _ in range(50):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(calls) == 2  # both ran, in order, after their acks
    finally:
        release.set()
        unregister(slow)


async def test_a_failing_handler_is_logged_and_the_socket_stays_open(
    ws_connect, user, caplog
):
    def broken(message, sender):
        raise RuntimeError("boom")

    message_handler("chat.broken")(broken)
    try:
        ws, _ = await ws_connect(user)
        await ws.send_json_to({"type": "chat.broken", "id": "x"})
        types = {(await receive_frame(ws))["type"] for _ in range(2)}
        assert types == {"chat.broken", "ack"}
        await asyncio.sleep(0.3)
        await assert_open(ws)
    finally:
        unregister(broken)
    assert "message handler failed" in caplog.text


# Subscriptions -----------------------------------------------------------------


async def test_subscribe_stops_once_the_store_gap_closed_the_socket(
    ws_connect, user, monkeypatch
):
    ws, _ = await ws_connect(user)

    async def lost_everything(self, max_bytes):
        return ReadResult([], self.position, 0, has_more=False, gap=True)

    monkeypatch.setattr(ReaderStream, "read_page", lost_everything)
    await ws.send_json_to({"type": "subscribe", "payload": {"topics": ["ops"]}})

    assert await receive_close_code(ws) == 4409  # and no `subscribed` before it


async def test_a_forbidden_topic_on_the_connect_url_closes_4403(user, sync_config):
    sync_config(TOPIC_AUTHORIZER=f"{__name__}.forbid_secret_topics")
    connected, ws = await handshake(f"token={await token_for(user)}&topics=secret")
    assert connected
    assert_error(await receive_frame(ws), "forbidden_topic")
    assert await receive_close_code(ws) == 4403
    await ws.disconnect()


async def test_a_forbidden_topic_in_subscribe_gets_an_error_frame(
    ws_connect, user, sync_config
):
    sync_config(TOPIC_AUTHORIZER=f"{__name__}.forbid_secret_topics")
    ws, _ = await ws_connect(user)
    await ws.send_json_to(
        {"type": "subscribe", "payload": {"topics": ["news", "secret"]}, "id": "s"}
    )
    assert_error(await receive_frame(ws), "forbidden_topic", "s")
    await ws.send_json_to({"type": "subscribe", "payload": {"topics": ["news"]}})
    assert (await receive_frame(ws))["payload"]["topics"] == ["news"]
