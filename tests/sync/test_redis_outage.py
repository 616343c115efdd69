"""Redis out of reach beyond the store: the rate-limit cache and the layer.

With REDIS_URL the shared cache (rate limits) and the channel layer live in
the store's Redis. Their failures must read as the store's (503
``store_unavailable``; an error frame then 1011), never as a 500 or a socket
dropped without a close frame. End to end: tests/e2e/test_redis_faults.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from channels.layers import channel_layers

from sync.ws import consumer as consumers
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


async def test_a_socket_outlives_a_channel_layer_read_that_fails(monkeypatch):
    monkeypatch.setattr(consumers, "LAYER_RETRY_SECONDS", 0.01)
    consumer = consumers.RealtimeConsumer()
    answers = [redis.ConnectionError("Connection closed by server."), {"type": "x"}]

    async def layer_receive():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    consumer.channel_receive = layer_receive  # as Channels sets it

    assert await consumer.channel_receive() == {"type": "x"}
    assert answers == []


async def test_a_closing_socket_never_retries_the_channel_layer(monkeypatch):
    # redis-py may answer a cancelled read with ConnectionError; retrying it
    # kept a closed socket's task alive, and uvicorn's shutdown waited on it.
    monkeypatch.setattr(consumers, "LAYER_RETRY_SECONDS", 0.01)
    consumer = consumers.RealtimeConsumer()
    reads = 0

    async def layer_receive():
        nonlocal reads
        reads += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise redis.ConnectionError("Connection closed by server.") from None

    consumer.channel_receive = layer_receive
    receiving = asyncio.ensure_future(consumer.channel_receive())
    await asyncio.sleep(0.05)
    receiving.cancel()
    await asyncio.wait({receiving}, timeout=1)

    assert receiving.cancelled()
    assert reads == 1


async def test_a_closing_socket_stops_a_layer_read_that_lost_its_cancellation(
    monkeypatch,
):
    # channels-redis can lose a cancellation (redis-py reads a cancelled
    # BZPOPMIN as its timeout and the receive loop starts another): a closed
    # socket's task, and a server's shutdown, then waited until killed.
    monkeypatch.setattr(consumers, "LAYER_CANCEL_GRACE_SECONDS", 0.2)
    consumer = consumers.RealtimeConsumer()
    cancellations = 0

    async def layer_receive():
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(5)  # one BZPOPMIN
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations > 1:
                    raise  # this time it is not lost

    consumer.channel_receive = layer_receive
    receiving = asyncio.ensure_future(consumer.channel_receive())
    await asyncio.sleep(0.05)
    receiving.cancel()  # as Channels does when the socket closes
    await asyncio.wait({receiving}, timeout=2)

    assert receiving.cancelled()
    assert cancellations == 2


async def test_a_closing_socket_lets_the_layer_unsubscribe_its_channel(
    monkeypatch,
):
    # The pub/sub layer unsubscribes when its read is cancelled, queued behind
    # other sockets' unsubscribes: cut short, the channel stayed subscribed
    # in the process and in Redis for good (many sockets closing at once).
    monkeypatch.setattr(consumers, "LAYER_CANCEL_GRACE_SECONDS", 2.0)
    consumer = consumers.RealtimeConsumer()
    unsubscribed = asyncio.Event()

    async def layer_receive():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # the unsubscribe, behind others
            unsubscribed.set()
            raise

    consumer.channel_receive = layer_receive
    receiving = asyncio.ensure_future(consumer.channel_receive())
    await asyncio.sleep(0.05)
    receiving.cancel()  # as Channels does when the socket closes
    await asyncio.wait({receiving}, timeout=3)

    assert receiving.cancelled()
    assert unsubscribed.is_set()


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
    # The channel that failed to open left nothing behind in the process.
    assert not channel_layers["default"]._get_layer().channels
