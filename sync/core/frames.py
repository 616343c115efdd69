"""Server frames of the WebSocket protocol (SPEC §5), built in one place."""

from __future__ import annotations

from typing import Any

from sync.core.clock import now_ms

Correlation = str | int | None


def correlation_of(frame: Any) -> Correlation:
    """The frame's own correlationId if it has one, else its id."""
    if not isinstance(frame, dict):
        return None
    for key in ("correlationId", "id"):
        value = frame.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
    return None


def established(
    connection_id: str,
    user_id: str,
    heartbeat_seconds: float,
    cursor: str,
    recovered: bool | None,
) -> dict[str, Any]:
    """The first frame of every accepted connection."""
    return {
        "type": "connection.established",
        "payload": {
            "connectionId": connection_id,
            "userId": user_id,
            "heartbeatInterval": int(heartbeat_seconds * 1000),
            "cursor": cursor,
            "recovered": recovered,
        },
    }


def ping() -> dict[str, Any]:
    """The server's heartbeat."""
    return {"type": "ping", "timestamp": now_ms()}


def pong(correlation: Correlation) -> dict[str, Any]:
    """The answer to a client ping."""
    return {"type": "pong", "correlationId": correlation, "timestamp": now_ms()}


def topics_changed(kind: str, topics: list[str], correlation: Correlation) -> dict:
    """`subscribed` or `unsubscribed`, with every topic subscribed now."""
    return {"type": kind, "payload": {"topics": topics}, "correlationId": correlation}


def ack(message: dict[str, Any], correlation: Correlation) -> dict[str, Any]:
    """The answer to a client message: its id and timestamp."""
    return {
        "type": "ack",
        "payload": {"messageId": message["id"], "timestamp": message["timestamp"]},
        "correlationId": correlation,
    }


def error(code: str, message: str, correlation: Correlation) -> dict[str, Any]:
    """A bad frame's answer; the connection stays open."""
    return {
        "type": "error",
        "payload": {"code": code, "message": message},
        "correlationId": correlation,
    }
