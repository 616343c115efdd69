"""A socket's topics (sync/ws/subscriptions.py): subscribe and unsubscribe
frames, topics on the connect URL, and what arrives after each change.

Every test talks to the real ASGI stack (config.asgi: switch, Origin check,
session and token auth, the consumer) through `WebsocketCommunicator`, and
asserts what a client on the other end of the socket would see.
"""

from __future__ import annotations

from sync.services.streams import ReaderStream
from sync.store.paging import ReadResult
from tests.sync.ws.sockets import (
    SIXTY_FIVE_TOPICS,
    assert_error,
    assert_silent,
    broadcast,
    handshake,
    ids,
    receive_close_code,
    receive_frame,
    token_for,
)

# Subscribe and unsubscribe frames ---------------------------------------------


async def test_subscribe_answers_with_every_topic_subscribed_now(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha")

    await ws.send_json_to(
        {"type": "subscribe", "payload": {"topics": ["gamma", "beta"]}, "id": "s1"}
    )

    assert await receive_frame(ws) == {
        "type": "subscribed",
        "payload": {"topics": ["alpha", "beta", "gamma"]},
        "correlationId": "s1",
    }


async def test_subscribing_again_to_a_topic_changes_nothing(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha")

    await ws.send_json_to(
        {"type": "subscribe", "payload": {"topics": ["alpha"]}, "correlationId": "c"}
    )

    assert await receive_frame(ws) == {
        "type": "subscribed",
        "payload": {"topics": ["alpha"]},
        "correlationId": "c",
    }


async def test_unsubscribe_answers_with_the_topics_left(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha,beta,gamma")

    await ws.send_json_to(
        {"type": "unsubscribe", "payload": {"topics": ["beta", "never"]}, "id": 3}
    )

    assert await receive_frame(ws) == {
        "type": "unsubscribed",
        "payload": {"topics": ["alpha", "gamma"]},
        "correlationId": 3,
    }


async def test_unsubscribing_from_everything_leaves_an_empty_list(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha")

    await ws.send_json_to({"type": "unsubscribe", "payload": {"topics": ["alpha"]}})

    frame = await receive_frame(ws)
    assert frame["type"] == "unsubscribed"
    assert frame["payload"] == {"topics": []}
    assert frame["correlationId"] is None


# At most 64 topics ------------------------------------------------------------


async def test_too_many_topics_in_total_are_refused(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=first")

    await ws.send_json_to(
        {"type": "subscribe", "id": "s", "payload": {"topics": SIXTY_FIVE_TOPICS[:64]}}
    )

    assert_error(await receive_frame(ws), "invalid_topics", "s")
    await ws.send_json_to({"type": "subscribe", "payload": {"topics": ["second"]}})
    assert (await receive_frame(ws))["payload"] == {"topics": ["first", "second"]}


# What arrives after a change --------------------------------------------------


async def test_after_unsubscribe_a_topic_broadcast_no_longer_arrives(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=alpha,beta")

    await ws.send_json_to({"type": "unsubscribe", "payload": {"topics": ["alpha"]}})
    await receive_frame(ws)
    await broadcast(1, topics=["alpha"])
    await assert_silent(ws)
    later = await broadcast(2, topics=["beta"])

    assert ids([await receive_frame(ws)]) == [later["id"]]
    await assert_silent(ws)


async def test_nothing_of_a_topic_arrives_after_its_unsubscribed_answer(
    ws_connect, user
):
    ws, _ = await ws_connect(user, query="topics=alpha")

    # Published before the server handled the frame: the socket still
    # followed the topic then, so it may get it, but only before the answer.
    await ws.send_json_to({"type": "unsubscribe", "payload": {"topics": ["alpha"]}})
    racing = await broadcast(1, topics=["alpha"])
    frames = [await receive_frame(ws)]
    if frames[0]["type"] != "unsubscribed":
        frames.append(await receive_frame(ws))
    await broadcast(2, topics=["alpha"])

    assert frames[-1]["type"] == "unsubscribed"
    assert [frame["id"] for frame in frames[:-1]] in ([], [racing["id"]])
    await assert_silent(ws)
    everyone = await broadcast(3)
    assert ids([await receive_frame(ws)]) == [everyone["id"]]


async def test_subscribing_does_not_deliver_earlier_broadcasts_of_the_topic(
    ws_connect, user
):
    ws, _ = await ws_connect(user)
    await broadcast(1, topics=["alpha"])
    await assert_silent(ws)
    await ws.send_json_to({"type": "subscribe", "payload": {"topics": ["alpha"]}})
    await receive_frame(ws)

    later = await broadcast(2, topics=["alpha"])

    assert ids([await receive_frame(ws)]) == [later["id"]]
    await assert_silent(ws)


# Topic authorization, and a gap that closed the socket ------------------------


def forbid_secret_topics(user, topic: str) -> bool:
    """A topic authorizer for tests: `secret.*` is refused to everyone."""
    return not topic.startswith("secret")


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
