"""Bound /api/ request bodies before Django reads them.

Django's ASGI handler spools the whole body to a temporary file before any
view runs; this cuts a huge or endless body off at the configured size. A
body sent without Content-Length (chunked) is buffered here, within the same
limit, and given one: DRF reads no body from a request that lacks it.
"""

from __future__ import annotations

import json

from sync.exception_handler import error_body
from sync.parsers import max_body_bytes


class BodyTooLarge(Exception):
    """Raised from `receive` once the body passes the limit."""


class RequestBodyLimit:
    """ASGI middleware: 413 for /api/ bodies over max_body_bytes()."""

    def __init__(self, app, path_prefix: str = "/api/") -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            return await self.app(scope, receive, send)
        limit = max_body_bytes()
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(send, limit)
        try:
            if declared is None:
                scope, receive = await _buffered(scope, receive, limit)
            else:
                receive = _limited(receive, limit)
            await self.app(scope, receive, send)
        except BodyTooLarge:
            await _refuse(send, limit)


def _limited(receive, limit: int):
    """Wrap `receive` to raise BodyTooLarge past `limit` bytes of body."""
    received = 0

    async def limited_receive():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge()
        return message

    return limited_receive


async def _buffered(scope, receive, limit: int):
    """Read a body of unknown length; return a scope with its Content-Length."""
    receive = _limited(receive, limit)
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return scope, _replay([message], receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    headers = [*scope["headers"], (b"content-length", str(len(body)).encode())]
    replay = _replay([{"type": "http.request", "body": body}], receive)
    return {**scope, "headers": headers}, replay


def _replay(messages: list, receive):
    """A `receive` that returns `messages` first, then defers to `receive`."""
    pending = list(messages)

    async def replay_receive():
        if pending:
            return pending.pop(0)
        return await receive()

    return replay_receive


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send, limit: int) -> None:
    body = json.dumps(
        error_body(
            "payload_too_large",
            f"The request body is over {limit} bytes.",
            {"limit": limit},
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
