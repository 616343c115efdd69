"""WebSocket helpers for the tests of sync/ws: frames read and checked
through `WebsocketCommunicator`, handshakes, publishing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from config.asgi import application
from sync.services import get_realtime_sync

ESTABLISHED_KEYS = {
    "connectionId",
    "userId",
    "heartbeatInterval",
    "cursor",
    "recovered",
}


# Small limits keep size tests fast: frames over 1024 + 4096 bytes close 1009.
SMALL_PAYLOAD_LIMIT = 1024
SMALL_FRAME_LIMIT = SMALL_PAYLOAD_LIMIT + 4096


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


def frame_of_size(size: int, type: str = "chat.message") -> str:
    """A message frame whose JSON text is exactly `size` bytes."""
    empty = json.dumps({"type": type, "payload": {"text": ""}})
    return json.dumps({"type": type, "payload": {"text": "x" * (size - len(empty))}})


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


def websocket_stats() -> dict[str, int]:
    return get_realtime_sync().get_stats()["websocket"]


async def broadcast(number: int, topics=None, type: str = "announcement") -> dict:
    """A broadcast with payload {"n": number}."""
    return await get_realtime_sync().abroadcast(type, {"n": number}, topics=topics)


SIXTY_FIVE_TOPICS = [f"t{number}" for number in range(65)]


def with_extras(caplog, message: str) -> list[logging.LogRecord]:
    return [entry for entry in caplog.records if entry.getMessage() == message]
