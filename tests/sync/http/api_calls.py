"""Calls to /api/ through DRF's test client, and checks on their answers,
for the tests of sync/http and the tests that read through the API.
"""

from __future__ import annotations

import time

from rest_framework.test import APIClient

from sync.services import get_realtime_sync

POLL = "/api/sync/poll"
SEND = "/api/sync/send"
STATUS = "/api/sync/status"
BROADCAST = "/api/sync/broadcast"
TOKEN = "/api/auth/token"
SCHEMA = "/api/schema/"


def assert_error(response, status: int, code: str) -> dict:
    """Check the error envelope of SPEC §4 and return its `error` part."""
    assert response.status_code == status, response.content
    body = response.json()
    assert body.keys() == {"success", "error"}
    assert body["success"] is False
    error = body["error"]
    assert error.keys() == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error


def poll(client: APIClient, **params) -> dict:
    """GET /api/sync/poll and return the (successful) body."""
    response = client.get(POLL, params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert body["count"] == len(body["messages"])
    return body


def send(client: APIClient, body) -> object:
    return client.post(SEND, body, format="json")


def broadcast(client: APIClient, body) -> object:
    return client.post(BROADCAST, body, format="json")


def publish(user, number: int = 0, type: str = "data.updated") -> dict:
    """A server-side message for `user` with payload {"n": number}."""
    return get_realtime_sync().publish(type, {"n": number}, user.pk)


def numbers(messages: list[dict]) -> list[int]:
    return [message["payload"]["n"] for message in messages]


def now_ms() -> int:
    return int(time.time() * 1000)


def payloads(body_or_messages) -> list[dict]:
    messages = body_or_messages
    if isinstance(body_or_messages, dict):
        messages = body_or_messages["messages"]
    return [message["payload"] for message in messages]
