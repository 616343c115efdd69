"""The WebSocket transport of SPEC §5, and the delivery rules of SPEC §3 through it.

Every test talks to the real ASGI stack (config.asgi: switch, Origin check,
session and token auth, the consumer) through `WebsocketCommunicator`, and
asserts what a client on the other end of the socket would see.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token

from config.asgi import application
from sync.services import get_realtime_sync, message_handler
from sync.services.handlers import unregister
from tests.conftest import PASSWORD
from tests.contract import MESSAGE_KEYS

ESTABLISHED_KEYS = {
    "connectionId",
    "userId",
    "heartbeatInterval",
    "cursor",
    "recovered",
}
LOCAL_ORIGIN = (b"origin", b"http://localhost:5000")
LOCAL_HOST = (b"host", b"localhost:5000")  # the request the origin must match
# Small limits keep size tests fast: frames over 1024 + 4096 bytes close 1009.
SMALL_PAYLOAD_LIMIT = 1024
SMALL_FRAME_LIMIT = SMALL_PAYLOAD_LIMIT + 4096


# Helpers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    """Start every test with an empty in-memory channel layer.

    Queues left by an earlier test belong to that test's (closed) event loop.
    """
    await get_channel_layer().flush()


async def receive_frame(ws, timeout: float = 1) -> dict[str, Any]:
    """The next text frame from the server, decoded."""
    return await ws.receive_json_from(timeout)


async def receive_frames(ws, count: int) -> list[dict[str, Any]]:
    """The next `count` frames from the server."""
    return [await receive_frame(ws) for _ in range(count)]


async def receive_close_code(ws, timeout: float = 1) -> int:
    """The code of the close the server sends next (and nothing before it)."""
    output = await ws.receive_output(timeout)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def assert_open(ws, frame_id: str = "still-there") -> None:
    """Prove the socket still answers: a ping gets its pong, nothing else came."""
    await ws.send_json_to({"type": "ping", "id": frame_id})
    frame = await receive_frame(ws)
    assert frame["type"] == "pong", frame
    assert frame["correlationId"] == frame_id


async def assert_silent(ws) -> None:
    """Nothing more arrives on this socket."""
    assert await ws.receive_nothing(0.1)


def assert_error(frame: dict, code: str, correlation_id: Any = None) -> None:
    """Check an error frame of SPEC §5."""
    assert frame.keys() == {"type", "payload", "correlationId"}, frame
    assert frame["type"] == "error"
    assert frame["payload"].keys() == {"code", "message"}
    assert frame["payload"]["code"] == code, frame
    assert isinstance(frame["payload"]["message"], str)
    assert frame["payload"]["message"]
    assert frame["correlationId"] == correlation_id


def assert_established(frame: dict, user, *, recovered: bool | None) -> dict:
    """Check connection.established and return its payload."""
    assert frame.keys() == {"type", "payload"}, frame
    assert frame["type"] == "connection.established"
    payload = frame["payload"]
    assert payload.keys() == ESTABLISHED_KEYS
    assert payload["userId"] == str(user.pk)
    assert payload["recovered"] is recovered
    return payload


def ids(messages: list[dict]) -> list[str]:
    return [message["id"] for message in messages]


def nested_dicts(depth: int) -> dict:
    """A payload whose objects nest `depth` levels (the payload itself is 1)."""
    payload: dict = {}
    for _ in range(depth - 1):
        payload = {"child": payload}
    return payload


def frame_of_size(size: int, type: str = "chat.message") -> str:
    """A message frame whose JSON text is exactly `size` bytes."""
    empty = json.dumps({"type": type, "payload": {"text": ""}})
    return json.dumps({"type": type, "payload": {"text": "x" * (size - len(empty))}})


def payload_of_size(size: int) -> dict:
    """A payload whose compact serialization is exactly `size` bytes."""
    return {"text": "x" * (size - len('{"text":""}'))}


async def token_for(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


async def handshake(
    query: str = "", headers=None, path: str = "/ws"
) -> tuple[bool, WebsocketCommunicator]:
    """Try a handshake outside the ws_connect fixture (which asserts success)."""
    url = path + (f"?{query}" if query else "")
    communicator = WebsocketCommunicator(application, url, headers=headers or [])
    connected, _ = await communicator.connect()
    return connected, communicator


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


def websocket_stats() -> dict[str, int]:
    return get_realtime_sync().get_stats()["websocket"]


async def publish(user, number: int, type: str = "data.updated") -> dict:
    """A server message for `user` with payload {"n": number}."""
    return await get_realtime_sync().apublish(type, {"n": number}, user.pk)


async def broadcast(number: int, topics=None, type: str = "announcement") -> dict:
    """A broadcast with payload {"n": number}."""
    return await get_realtime_sync().abroadcast(type, {"n": number}, topics=topics)


@pytest.fixture
def handled():
    """Register a handler for ``chat.message``; list what it receives."""
    calls: list[tuple[dict, Any]] = []

    async def record(message, user):
        calls.append((message, user))

    message_handler("chat.message")(record)
    yield calls
    unregister(record)


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


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_both_paths_serve_the_endpoint(ws_connect, user, path):
    _, first = await ws_connect(user, path=path)

    assert_established(first, user, recovered=None)


# Client frames: ping, pong, subscribe, unsubscribe ----------------------------------


@pytest.mark.parametrize(
    ("frame", "correlation_id"),
    [
        pytest.param({"type": "ping", "id": "p1"}, "p1", id="string-id"),
        pytest.param({"type": "ping", "id": 7}, 7, id="integer-id"),
        pytest.param(
            {"type": "ping", "id": "p2", "correlationId": "c2"},
            "c2",
            id="correlation-id-wins",
        ),
        pytest.param({"type": "ping", "correlationId": "c3"}, "c3", id="no-id"),
        pytest.param({"type": "ping"}, None, id="neither"),
    ],
)
async def test_ping_gets_pong_with_correlation_id_and_timestamp(
    ws_connect, user, frame, correlation_id
):
    ws, _ = await ws_connect(user)
    before = get_realtime_sync().store.head(str(user.pk))

    await ws.send_json_to(frame)

    pong = await receive_frame(ws)
    assert pong.keys() == {"type", "correlationId", "timestamp"}
    assert pong["type"] == "pong"
    assert pong["correlationId"] == correlation_id
    assert isinstance(pong["timestamp"], int)
    assert pong["timestamp"] > 1_600_000_000_000
    await assert_silent(ws)
    # A protocol frame is not a message: nothing was stored or delivered.
    assert get_realtime_sync().store.head(str(user.pk)) == before


async def test_pong_gets_no_answer(ws_connect, user):
    ws, _ = await ws_connect(user)

    await ws.send_json_to({"type": "pong", "id": "x", "timestamp": 1})

    await assert_silent(ws)
    await assert_open(ws)


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


# Client frames: messages -------------------------------------------------------------


async def test_a_message_frame_is_acked_and_reaches_every_socket_of_the_sender(
    ws_connect, user, other_user
):
    sender, _ = await ws_connect(user)
    other_tab, _ = await ws_connect(user)
    stranger, _ = await ws_connect(other_user)

    await sender.send_json_to(
        {"type": "chat.message", "payload": {"text": "hi"}, "id": "m1"}
    )

    frames = await receive_frames(sender, 2)
    ack = next(frame for frame in frames if frame["type"] == "ack")
    echo = next(frame for frame in frames if frame["type"] == "chat.message")
    assert ack.keys() == {"type", "payload", "correlationId"}
    assert ack["payload"].keys() == {"messageId", "timestamp"}
    assert ack["correlationId"] == "m1"
    assert echo.keys() == MESSAGE_KEYS
    assert echo["id"] == ack["payload"]["messageId"]
    assert echo["timestamp"] == ack["payload"]["timestamp"]
    assert echo["userId"] == str(user.pk)
    assert echo["payload"] == {"text": "hi"}
    assert echo["topics"] == []
    assert echo["cursor"]
    other_copy = await receive_frame(other_tab)
    assert other_copy == {**echo, "cursor": other_copy["cursor"]}
    await assert_silent(stranger)
    await assert_silent(sender)


async def test_a_message_frame_reaches_the_registered_handler(
    ws_connect, user, handled
):
    ws, _ = await ws_connect(user)

    await ws.send_json_to({"type": "chat.message", "payload": {"text": "hi"}})
    frames = await receive_frames(ws, 2)

    ack = next(frame for frame in frames if frame["type"] == "ack")
    for _ in range(100):  # handlers run after the ack, in their own task
        if handled:
            break
        await asyncio.sleep(0.01)
    assert len(handled) == 1
    message, sender = handled[0]
    assert message["id"] == ack["payload"]["messageId"]
    assert message["userId"] == str(user.pk)
    assert message["payload"] == {"text": "hi"}
    assert sender.pk == user.pk


async def test_a_message_keeps_its_correlation_id(ws_connect, user):
    ws, _ = await ws_connect(user)

    await ws.send_json_to(
        {"type": "todo.add", "payload": {}, "id": "f9", "correlationId": "req-1"}
    )

    frames = {frame["type"]: frame for frame in await receive_frames(ws, 2)}
    assert frames["ack"]["correlationId"] == "req-1"
    assert frames["todo.add"]["correlationId"] == "req-1"


async def test_a_message_frame_may_carry_id_and_timestamp(ws_connect, user):
    ws, _ = await ws_connect(user)

    await ws.send_json_to({"type": "todo.add", "id": 12, "timestamp": 1})

    frames = {frame["type"]: frame for frame in await receive_frames(ws, 2)}
    assert frames["ack"]["correlationId"] == 12
    # The server stamps its own time; a missing payload is an empty object.
    assert frames["todo.add"]["timestamp"] > 1_600_000_000_000
    assert frames["todo.add"]["payload"] == {}


async def test_a_payload_of_exactly_the_limit_is_accepted(
    ws_connect, user, sync_config
):
    sync_config(MAX_PAYLOAD_BYTES=SMALL_PAYLOAD_LIMIT)
    ws, _ = await ws_connect(user)

    await ws.send_json_to(
        {"type": "chat.message", "payload": payload_of_size(SMALL_PAYLOAD_LIMIT)}
    )

    types = sorted(frame["type"] for frame in await receive_frames(ws, 2))
    assert types == ["ack", "chat.message"]


async def test_a_payload_nested_32_levels_is_accepted(ws_connect, user):
    ws, _ = await ws_connect(user)

    await ws.send_json_to({"type": "chat.message", "payload": nested_dicts(32)})

    types = sorted(frame["type"] for frame in await receive_frames(ws, 2))
    assert types == ["ack", "chat.message"]


# Bad frames ------------------------------------------------------------------------

SIXTY_FIVE_TOPICS = [f"t{number}" for number in range(65)]


@pytest.mark.parametrize(
    ("text", "code", "correlation_id"),
    [
        pytest.param("not json", "invalid_json", None, id="not-json"),
        pytest.param('{"type": "ping"', "invalid_json", None, id="truncated"),
        pytest.param(
            '{"type": "chat", "payload": {"x": NaN}}', "invalid_json", None, id="nan"
        ),
        pytest.param("[1, 2]", "invalid_message", None, id="array"),
        pytest.param('"ping"', "invalid_message", None, id="string"),
        pytest.param("null", "invalid_message", None, id="null"),
        pytest.param(
            {"type": "ping", "id": "f1", "extra": 1},
            "unknown_field",
            "f1",
            id="unknown",
        ),
        pytest.param({"id": "f2", "payload": {}}, "invalid_type", "f2", id="no-type"),
        pytest.param({"type": "", "id": "f3"}, "invalid_type", "f3", id="empty-type"),
        pytest.param({"type": 5, "id": "f4"}, "invalid_type", "f4", id="number-type"),
        pytest.param({"type": "9lives"}, "invalid_type", None, id="digit-first"),
        pytest.param({"type": "has space"}, "invalid_type", None, id="space"),
        pytest.param({"type": "a" * 65}, "invalid_type", None, id="65-chars"),
        pytest.param(
            {"type": "todo", "id": "f5", "payload": [1]},
            "invalid_payload",
            "f5",
            id="payload-array",
        ),
        pytest.param(
            {"type": "todo", "payload": "text"}, "invalid_payload", None, id="p-string"
        ),
        pytest.param(
            {"type": "todo", "payload": None}, "invalid_payload", None, id="p-null"
        ),
        pytest.param(
            {"type": "todo", "id": "f6", "payload": {"__proto__": {"admin": True}}},
            "forbidden_key",
            "f6",
            id="proto",
        ),
        pytest.param(
            {"type": "todo", "payload": {"a": {"constructor": 1}}},
            "forbidden_key",
            None,
            id="nested-constructor",
        ),
        pytest.param(
            {"type": "todo", "payload": {"items": [{"prototype": 1}]}},
            "forbidden_key",
            None,
            id="prototype-in-list",
        ),
        pytest.param(
            {"type": "todo", "id": "f7", "payload": nested_dicts(33)},
            "payload_too_deep",
            "f7",
            id="33-levels",
        ),
        pytest.param(
            {"type": "subscribe", "id": "f8", "payload": {"topics": ["bad topic"]}},
            "invalid_topics",
            "f8",
            id="subscribe-bad-name",
        ),
        pytest.param(
            {"type": "subscribe", "payload": {"topics": "alpha"}},
            "invalid_topics",
            None,
            id="subscribe-not-a-list",
        ),
        pytest.param(
            {"type": "subscribe", "payload": {}},
            "invalid_topics",
            None,
            id="subscribe-no-topics",
        ),
        pytest.param(
            {"type": "subscribe", "payload": {"topics": SIXTY_FIVE_TOPICS}},
            "invalid_topics",
            None,
            id="subscribe-65-topics",
        ),
        pytest.param(
            {"type": "unsubscribe", "id": 9, "payload": {"topics": ["a:b"]}},
            "invalid_topics",
            9,
            id="unsubscribe-bad-name",
        ),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(
    ws_connect, user, text, code, correlation_id
):
    ws, _ = await ws_connect(user)
    before = get_realtime_sync().store.head(str(user.pk))

    await ws.send_to(text_data=text if isinstance(text, str) else json.dumps(text))

    assert_error(await receive_frame(ws), code, correlation_id)
    await assert_silent(ws)
    await assert_open(ws)
    assert get_realtime_sync().store.head(str(user.pk)) == before


@pytest.mark.parametrize(
    "type",
    [
        "announcement",
        "error",
        "data.updated",
        "notification.new",
        "system.restart",
        "sync.reset",
        "connection.established",
    ],
)
async def test_reserved_types_are_refused(ws_connect, user, type):
    ws, _ = await ws_connect(user)

    await ws.send_json_to(
        {"type": type, "payload": {}, "id": "i", "correlationId": "c"}
    )

    assert_error(await receive_frame(ws), "reserved_type", "c")
    await assert_silent(ws)
    await assert_open(ws)


async def test_a_binary_frame_is_refused(ws_connect, user):
    ws, _ = await ws_connect(user)

    await ws.send_to(bytes_data=json.dumps({"type": "ping", "id": "b"}).encode())

    assert_error(await receive_frame(ws), "invalid_json")
    await assert_silent(ws)
    await assert_open(ws)


async def test_a_payload_over_the_limit_in_a_frame_under_the_cap_is_refused(
    ws_connect, user, sync_config
):
    sync_config(MAX_PAYLOAD_BYTES=SMALL_PAYLOAD_LIMIT)
    ws, _ = await ws_connect(user)

    await ws.send_json_to(
        {"type": "chat.message", "payload": payload_of_size(SMALL_PAYLOAD_LIMIT + 1)}
    )
    assert_error(await receive_frame(ws), "payload_too_large")
    await ws.send_to(text_data=frame_of_size(SMALL_FRAME_LIMIT))
    assert_error(await receive_frame(ws), "payload_too_large")

    await assert_silent(ws)
    await assert_open(ws)


async def test_too_many_topics_in_total_are_refused(ws_connect, user):
    ws, _ = await ws_connect(user, query="topics=first")

    await ws.send_json_to(
        {"type": "subscribe", "id": "s", "payload": {"topics": SIXTY_FIVE_TOPICS[:64]}}
    )

    assert_error(await receive_frame(ws), "invalid_topics", "s")
    await ws.send_json_to({"type": "subscribe", "payload": {"topics": ["second"]}})
    assert (await receive_frame(ws))["payload"] == {"topics": ["first", "second"]}


# Authentication and close codes ------------------------------------------------------


async def test_no_credentials_closes_with_4401(ws_connect, transactional_db):
    ws, first = await ws_connect()

    assert first is None
    assert ws.close_frame["code"] == 4401
    assert websocket_stats()["activeConnections"] == 0


@pytest.mark.parametrize("token", ["not-a-token", "0" * 40])
async def test_a_bad_token_closes_with_4401(ws_connect, transactional_db, token):
    ws, first = await ws_connect(query=f"token={token}")

    assert first is None
    assert ws.close_frame["code"] == 4401


async def test_the_token_of_an_inactive_user_closes_with_4401(
    ws_connect, user, django_user_model
):
    key = await token_for(user)
    await django_user_model.objects.filter(pk=user.pk).aupdate(is_active=False)

    ws, first = await ws_connect(query=f"token={key}")

    assert first is None
    assert ws.close_frame["code"] == 4401


async def test_a_token_in_the_query_authenticates(ws_connect, user):
    key = await token_for(user)

    _, first = await ws_connect(query=f"token={key}")

    assert_established(first, user, recovered=None)


async def test_a_session_cookie_authenticates(ws_connect, user):
    client = Client()
    assert await client.alogin(username=user.username, password=PASSWORD)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())

    _, first = await ws_connect(headers=[cookie, LOCAL_HOST, LOCAL_ORIGIN])

    assert_established(first, user, recovered=None)


async def test_an_unknown_session_cookie_closes_with_4401(ws_connect, transactional_db):
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}=nosuchsession".encode())

    ws, first = await ws_connect(headers=[cookie])

    assert first is None
    assert ws.close_frame["code"] == 4401


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("cursor=garbage", "invalid_cursor", id="cursor-garbage"),
        pytest.param("cursor=ABC-1-2", "invalid_cursor", id="cursor-uppercase"),
        pytest.param("cursor=abc-1", "invalid_cursor", id="cursor-short"),
        pytest.param("topics=bad%20topic", "invalid_topics", id="topics-space"),
        pytest.param("topics=a:b", "invalid_topics", id="topics-colon"),
        pytest.param(
            "topics=" + ",".join(SIXTY_FIVE_TOPICS), "invalid_topics", id="65-topics"
        ),
    ],
)
async def test_bad_connection_parameters_close_with_4400_after_an_error(
    ws_connect, user, query, code
):
    ws, first = await ws_connect(user, query=query)

    assert_error(first, code)
    assert await receive_close_code(ws) == 4400
    assert websocket_stats()["activeConnections"] == 0


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(frame_of_size(SMALL_FRAME_LIMIT + 1), id="text"),
        # Counted in bytes: 3000 two-byte characters are 6000 bytes.
        pytest.param(
            json.dumps(
                {"type": "todo", "payload": {"t": "é" * 3000}}, ensure_ascii=False
            ),
            id="multibyte-text",
        ),
        pytest.param(b"x" * (SMALL_FRAME_LIMIT + 1), id="binary"),
    ],
)
async def test_a_frame_over_the_cap_closes_with_1009(
    ws_connect, user, sync_config, frame
):
    sync_config(MAX_PAYLOAD_BYTES=SMALL_PAYLOAD_LIMIT)
    ws, _ = await ws_connect(user)

    if isinstance(frame, bytes):
        await ws.send_to(bytes_data=frame)
    else:
        await ws.send_to(text_data=frame)

    assert await receive_close_code(ws) == 1009
    assert get_realtime_sync().store.stats().total_messages == 0


async def test_frames_beyond_the_rate_are_throttled_then_twice_it_closes_4429(
    ws_connect, user, sync_config
):
    sync_config(WS_RATE_LIMIT="5/10s")
    ws, _ = await ws_connect(user)

    for number in range(5):
        await ws.send_json_to({"type": "ping", "id": number})
    for number in range(5, 9):
        await ws.send_json_to({"type": "chat.message", "id": number})

    for number in range(5):
        assert (await receive_frame(ws))["correlationId"] == number
    for _ in range(5, 9):
        frame = await receive_frame(ws)
        assert frame["type"] == "error"
        assert frame["payload"]["code"] == "throttled"
    await assert_silent(ws)
    # The throttled messages were dropped, not delivered.
    assert get_realtime_sync().store.stats().total_messages == 0
    await ws.send_json_to({"type": "ping", "id": "tenth"})
    assert await receive_close_code(ws) == 4429


async def test_a_throttled_error_carries_the_frames_correlation_id(
    ws_connect, user, sync_config
):
    sync_config(WS_RATE_LIMIT="2/10s")
    ws, _ = await ws_connect(user)
    for number in range(2):
        await ws.send_json_to({"type": "ping", "id": number})
        await receive_frame(ws)

    await ws.send_json_to({"type": "ping", "id": "dropped"})

    assert_error(await receive_frame(ws), "throttled", "dropped")


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


async def test_cancelling_the_application_closes_with_1001(user):
    connected, ws = await handshake(f"token={await token_for(user)}")
    assert connected
    assert (await receive_frame(ws))["type"] == "connection.established"

    assert await cancel_application(ws) == 1001


# Handshake: Origin and the WebSocket switch ---------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.com",
        b"http://localhost.evil.com",
        b"https://evil.com/http://localhost",
        b"null",
        b"http://[::1",
    ],
)
async def test_a_foreign_origin_is_refused_at_the_handshake(user, origin):
    connected, ws = await handshake(
        f"token={await token_for(user)}", headers=[(b"origin", origin)]
    )

    assert connected is False
    assert websocket_stats()["totalConnections"] == 0
    await ws.disconnect()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([LOCAL_HOST, LOCAL_ORIGIN], id="localhost"),
        pytest.param(
            [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
            id="loopback",
        ),
        pytest.param([], id="no-origin"),
    ],
)
async def test_a_matching_or_missing_origin_is_admitted(ws_connect, user, headers):
    _, first = await ws_connect(user, headers=headers)

    assert_established(first, user, recovered=None)


async def test_websocket_disabled_refuses_every_handshake(user, sync_config):
    sync_config(WEBSOCKET_ENABLED=False)
    query = f"token={await token_for(user)}"

    for path, headers in [("/ws", []), ("/ws/", [LOCAL_HOST, LOCAL_ORIGIN])]:
        connected, ws = await handshake(query, headers=headers, path=path)
        assert connected is False
        await ws.disconnect()
    assert websocket_stats()["totalConnections"] == 0


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


async def test_a_big_frame_dropped_over_the_rate_is_not_parsed(
    ws_connect, user, sync_config, monkeypatch
):
    # Each dropped frame was parsed in full to find its correlation: with
    # costly shapes, 600 parses per user every 10 s (hostile test).
    from sync.ws import frame_text

    sync_config(WS_RATE_LIMIT="3/10s")
    ws, _ = await ws_connect(user)
    for number in range(3):
        await ws.send_json_to({"type": "ping", "id": number})
        await receive_frame(ws)
    parsed = []
    loads = frame_text.loads_strict

    def counted(text):
        parsed.append(text)
        return loads(text)

    monkeypatch.setattr(frame_text, "loads_strict", counted)

    big = {"type": "chat.blob", "payload": {"a": [{}] * 2_000}, "id": "big"}
    await ws.send_json_to(big)
    await ws.send_json_to({"type": "ping", "id": "small"})

    assert_error(await receive_frame(ws), "throttled", None)
    assert_error(await receive_frame(ws), "throttled", "small")
    assert len(parsed) == 1  # the small one only
