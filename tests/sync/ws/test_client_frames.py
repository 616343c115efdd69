"""A socket's client frames (sync/ws/client_frames.py): ping, messages and
their ack, bad frames, the handlers that run after the ack.

Every test talks to the real ASGI stack (config.asgi: switch, Origin check,
session and token auth, the consumer) through `WebsocketCommunicator`, and
asserts what a client on the other end of the socket would see.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from sync.services import get_realtime_sync, message_handler
from sync.services.handlers import unregister
from tests.contract import MESSAGE_KEYS
from tests.sync.texts import LONE
from tests.sync.waiting import until
from tests.sync.ws.sockets import (
    SIXTY_FIVE_TOPICS,
    SMALL_FRAME_LIMIT,
    SMALL_PAYLOAD_LIMIT,
    assert_error,
    assert_open,
    assert_silent,
    frame_of_size,
    receive_frame,
    receive_frames,
)

# Helpers ----------------------------------------------------------------------


def nested_dicts(depth: int) -> dict:
    """A payload whose objects nest `depth` levels (the payload itself is 1)."""
    payload: dict = {}
    for _ in range(depth - 1):
        payload = {"child": payload}
    return payload


def payload_of_size(size: int) -> dict:
    """A payload whose compact serialization is exactly `size` bytes."""
    return {"text": "x" * (size - len('{"text":""}'))}


@pytest.fixture
def handled():
    """Register a handler for ``chat.message``; list what it receives."""
    calls: list[tuple[dict, Any]] = []

    async def record(message, user):
        calls.append((message, user))

    message_handler("chat.message")(record)
    yield calls
    unregister(record)


# Ping and pong ----------------------------------------------------------------


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
    await until(lambda: handled)  # handlers run after the ack, in their own task
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
        await until(lambda: len(calls) == 2)
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
        await until(lambda: "message handler failed" in caplog.text)
        await assert_open(ws)
    finally:
        unregister(broken)
    assert "message handler failed" in caplog.text


# Invalid Unicode --------------------------------------------------------------


async def test_frame_with_a_lone_surrogate_gets_an_error_frame_and_stays_open(
    ws_connect, user
):
    ws, _ = await ws_connect(user)
    await ws.send_to(text_data=f'{{"type": "chat", "id": "f1", "payload": "{LONE}"}}')
    error = await ws.receive_json_from(1)
    assert error["type"] == "error"
    assert error["payload"]["code"] == "invalid_unicode"
    await ws.send_to(text_data=json.dumps({"type": "ping", "id": "after"}))
    pong = await ws.receive_json_from(1)
    assert pong["type"] == "pong"
    assert pong["correlationId"] == "after"
    assert await ws.receive_nothing(0.1)
