"""Requests straight to the lean /api/ handler (sync.http.fast_path.ApiHandler),
as ASGI, and checks on their answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from channels.testing import HttpCommunicator
from rest_framework.authtoken.models import Token

from sync.services.token_cache import token_cache


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@pytest.fixture(autouse=True)
def empty_token_cache():
    token_cache().clear()
    yield
    token_cache().clear()


async def token_of(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


def request(app, method: str, path: str, *, token=None, data=None, headers=()):
    """An HttpCommunicator for one request; answer it with `answer`."""
    raw = [(b"host", b"localhost"), *headers]
    if token is not None:
        raw.append((b"authorization", f"Token {token}".encode()))
    body = b""
    if data is not None:
        body = json.dumps(data).encode()
        raw += [(b"content-type", b"application/json")]
        raw += [(b"content-length", str(len(body)).encode())]
    return HttpCommunicator(app, method, path, body=body, headers=raw)


async def answer(communicator, timeout: float = 5) -> Answer:
    response = await communicator.get_response(timeout)
    await communicator.wait(timeout)  # the application has returned
    headers = {
        name.decode().lower(): value.decode() for name, value in response["headers"]
    }
    return Answer(response["status"], headers, response["body"])


async def call(app, method: str, path: str, **options) -> Answer:
    return await answer(request(app, method, path, **options))


def assert_error(response: Answer, status: int, code: str) -> None:
    assert response.status == status, response.body
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["details"], dict)
