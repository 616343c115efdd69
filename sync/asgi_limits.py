"""Refuse oversize /api/ request bodies before Django reads them.

Django's ASGI handler spools the whole body to a temporary file before any
view runs; this cuts a huge or endless body off at the configured size.
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
        if _declared_length(scope) > limit:
            return await _refuse(send, limit)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await _refuse(send, limit)


def _declared_length(scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


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
