"""Redis out of reach beyond the store: the rate-limit cache and the layer.

With REDIS_URL the shared cache (rate limits) and the channel layer live in
the store's Redis. The cache's failures must read as the store's (503
``store_unavailable``), never as a 500. Sockets hold no channel-layer
channel (messages and revocations reach them through the hub), so the
layer's Redis being away costs them nothing. End to end:
tests/e2e/test_redis_faults.py.
"""

from __future__ import annotations

import json

import pytest
from channels.layers import channel_layers

from tests.conftest import closed_port


def test_an_unreachable_rate_limit_cache_answers_503(
    api_client, unreachable_redis_cache
):
    response = api_client.post(
        "/api/sync/send", {"type": "chat.message", "payload": {}}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response["Retry-After"] == "2"


def test_metrics_are_served_while_the_rate_limit_cache_is_unreachable(
    anon_client, unreachable_redis_cache, sync_config
):
    # Each process's own figures need no Redis; an outage is when they matter.
    sync_config(METRICS_ALLOW=["127.0.0.1"])

    response = anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert b"sync_connections" in response.content


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
