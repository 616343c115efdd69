"""Sockets and the channel layer (sync/ws/channel_layer.py, with REDIS_URL).

With REDIS_URL the channel layer lives in the store's Redis. Sockets hold no
channel-layer channel (messages and revocations reach them through the hub),
so the layer's Redis being away costs them nothing. End to end:
tests/e2e/test_redis_faults.py.
"""

from __future__ import annotations

import json

import pytest
from channels.layers import channel_layers

from sync.services import get_realtime_sync
from tests.conftest import closed_port


@pytest.fixture
def unreachable_pubsub_layer(settings):
    """The pub/sub layer (it subscribes a channel per socket) on a dead Redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sync.ws.channel_layer.PubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def test_a_socket_opens_while_the_layers_redis_is_out_of_reach(
    ws_connect, user, unreachable_pubsub_layer
):
    socket, welcome = await ws_connect(user)

    assert welcome is not None, socket.close_frame  # not an HTTP 500
    assert welcome["type"] == "connection.established"
    await socket.send_to(text_data='{"type": "ping"}')
    assert json.loads((await socket.receive_output(2))["text"])["type"] == "pong"
    # No channel was asked of the layer: nothing behind in the process.
    assert not channel_layers["default"]._get_layer().channels


async def test_a_socket_is_revoked_while_the_layers_redis_is_out_of_reach(
    ws_connect, user, unreachable_pubsub_layer
):
    from sync.services.revocation import arevoke_user

    socket, welcome = await ws_connect(user)
    assert welcome["type"] == "connection.established"

    await arevoke_user(user.pk)

    assert (await socket.receive_output(2))["code"] == 4401


@pytest.fixture
def redis_layer(settings, redis_url, test_prefix):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sync.ws.channel_layer.PubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": test_prefix},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_websocket_delivery_through_channels_redis(redis_layer, ws_connect, user):
    first_tab, _ = await ws_connect(user, query="topics=ops")
    second_tab, _ = await ws_connect(user)
    sync = get_realtime_sync()

    sent = await sync.apublish("data.updated", {"rows": [1, 2]}, user.pk)
    ops = await sync.abroadcast("announcement", {"text": "deploy"}, topics=["ops"])

    for tab in (first_tab, second_tab):
        message = await tab.receive_json_from(5)
        assert (message["id"], message["payload"]) == (sent["id"], {"rows": [1, 2]})
    announcement = await first_tab.receive_json_from(5)
    assert announcement["id"] == ops["id"]
    assert await second_tab.receive_nothing(0.3)
