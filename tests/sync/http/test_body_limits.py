"""Request bodies bounded on every route before they are read
(sync/http/body_limits.py, issue 15).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable

import pytest

from sync.core.validation import max_body_bytes
from sync.http import body_limits as asgi_limits
from sync.http.body_limits import LINGER_BYTES, RequestBodyLimit, body_limit

PAGE_LIMIT = 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE by default


class Page:
    """An application that reads the whole body, then answers 200."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """Sends one request through RequestBodyLimit(Page()); records the answer."""

    def __init__(self) -> None:
        self.page = Page()
        self.app = RequestBodyLimit(self.page)
        self.received = 0
        self.received_before_answer: int | None = None
        self.sent: list[dict] = []

    async def request(
        self, path: str, chunks: Iterable[bytes], length: int | None, hang=False
    ):
        """Send `chunks` as the body; then the client leaves (or, `hang`, waits)."""
        headers = [] if length is None else [(b"content-length", b"%d" % length)]
        scope = {"type": "http", "path": path, "root_path": "", "headers": headers}
        pending = iter(chunks)
        following = next(pending, None)

        async def receive():
            nonlocal following
            self.received += 1
            if following is None:
                if hang:
                    await asyncio.Event().wait()
                return {"type": "http.disconnect"}
            body, following = following, next(pending, None)
            return {"type": "http.request", "body": body, "more_body": bool(following)}

        async def send(message):
            if self.received_before_answer is None:
                self.received_before_answer = self.received
            self.sent.append(message)

        await self.app(scope, receive, send)
        return self

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def ended(self) -> bool:
        return not self.sent[-1].get("more_body", False)

    def json(self) -> dict:
        return json.loads(self.sent[1]["body"])


def pieces(total: int, size: int = 65536) -> list[bytes]:
    return [b"a" * min(size, total - start) for start in range(0, total, size)]


async def test_a_declared_body_over_a_pages_limit_is_refused_unread():
    body = pieces(PAGE_LIMIT + 1)
    client = await Client().request("/accounts/login/", body, PAGE_LIMIT + 1)

    assert client.status == 413
    assert client.json()["error"]["code"] == "payload_too_large"
    assert client.json()["error"]["details"] == {"limit": PAGE_LIMIT}
    assert client.headers[b"connection"] == b"close"
    assert client.received_before_answer == 0
    assert client.page.called is False
    # The rest was dropped as it came, so the client could read the answer.
    assert client.received == len(body)
    assert client.ended


async def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    body = pieces(PAGE_LIMIT + 200_000)
    client = await Client().request("/", body, None)

    assert client.status == 413
    # Answered at the first chunk past the limit, not at the end.
    assert client.received_before_answer == PAGE_LIMIT // 65536 + 1
    assert client.ended


async def test_the_rest_of_a_refused_body_is_dropped_for_a_bounded_while(
    monkeypatch,
):
    monkeypatch.setattr(asgi_limits, "LINGER_SECONDS", 0.05)
    endless = await Client().request("/", itertools.repeat(b"a" * 65536), None)
    stalled = await Client().request("/", [b""], PAGE_LIMIT + 1, hang=True)

    assert endless.status == stalled.status == 413
    assert endless.ended
    assert stalled.ended
    dropped = (endless.received - endless.received_before_answer) * 65536
    assert LINGER_BYTES <= dropped <= LINGER_BYTES + 65536


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/sync/send"])
async def test_everything_the_api_serves_gets_the_apis_limit(path):
    declared = await Client().request(path, [b""], max_body_bytes() + 1)
    chunked = await Client().request(path, pieces(max_body_bytes() + 1, 4096), None)

    assert declared.status == 413
    assert chunked.status == 413
    assert declared.json()["error"]["details"] == {"limit": max_body_bytes()}


async def test_a_body_within_the_limit_reaches_the_application_whole():
    body = pieces(PAGE_LIMIT)
    client = await Client().request("/apiary", body, None)  # not the API

    assert client.status == 200
    assert client.page.body == b"".join(body)


async def test_no_limit_outside_the_api_when_django_sets_none(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    body = pieces(PAGE_LIMIT + 1)
    client = await Client().request("/", body, PAGE_LIMIT + 1)

    assert client.status == 200
    assert body_limit({"path": "/", "root_path": ""}) is None
    assert body_limit({"path": "/api", "root_path": ""}) == max_body_bytes()


async def test_other_scopes_pass_through():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    await RequestBodyLimit(app)({"type": "websocket", "path": "/ws"}, None, None)

    assert calls == ["websocket"]
