"""Heartbeats (sync/ws/heartbeats.py): the server's pings, 4408 for a silent
client, and the re-check that closes a socket whose access was revoked.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model

from tests.sync.ws.sockets import (
    assert_open,
    receive_close_code,
    receive_frame,
)

# Pings, and 4408 for a silent client ------------------------------------------


async def test_a_silent_client_gets_a_ping_then_4408(ws_connect, user, sync_config):
    sync_config(HEARTBEAT_INTERVAL=1)
    ws, first = await ws_connect(user)
    assert first["payload"]["heartbeatInterval"] == 1_000

    ping = await receive_frame(ws, timeout=1.5)

    assert ping.keys() == {"type", "timestamp"}
    assert ping["type"] == "ping"
    assert isinstance(ping["timestamp"], int)
    assert await receive_close_code(ws, timeout=1.5) == 4408


async def test_answering_pings_keeps_the_socket_open(ws_connect, user, sync_config):
    sync_config(HEARTBEAT_INTERVAL=1)
    ws, _ = await ws_connect(user)

    # Three intervals: past the two after which a silent socket is closed.
    for _ in range(3):
        ping = await receive_frame(ws, timeout=1.5)
        assert ping["type"] == "ping"
        await ws.send_json_to({"type": "pong"})

    await assert_open(ws)


# The re-check: revocations no signal reported ---------------------------------


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
