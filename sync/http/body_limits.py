"""Bound request bodies before Django reads them, on every HTTP route.

Django's ASGI handler spools the whole body to a temporary file before any
view, or the CSRF check, runs: a 300 MB POST to the login page was written
to disk in full before its 403. Here a body is refused with 413 as soon as
its Content-Length, or the count of its chunks, passes its route's limit:
the API's own (``max_body_bytes()``) for whatever ``is_api`` sends to the
API, ``/api`` without its slash included; Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` elsewhere (None: no limit). The answer
closes the connection: what follows of the body is read and dropped for a
short while first (``LINGER_BYTES``, ``LINGER_SECONDS``), so a client that
sends its whole body before reading, as most do, gets the 413 rather than a
reset; nothing of it is kept.

A body sent to the API without Content-Length (chunked) is buffered here,
within the same limit, and given one: DRF reads no body from a request that
lacks it. Under daphne, twisted reads a body before the application sees
it; ``sync.ops.daphne_limits`` applies the same limits there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from django.conf import settings

from sync.core.protocol import error_body
from sync.core.validation import max_body_bytes
from sync.http.fast_path import is_api

# After a 413, the rest of the body is dropped as it comes, up to this many
# bytes or seconds; then the connection is closed, unread data or not.
LINGER_BYTES = 16 * 2**20
LINGER_SECONDS = 5.0


class BodyTooLarge(Exception):
    """Raised from `receive` once the body passes the limit."""


def body_limit(scope) -> int | None:
    """The most body bytes a request to this route may carry (None: any)."""
    if is_api(scope):
        return max_body_bytes()
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class RequestBodyLimit:
    """ASGI middleware: 413 for bodies over their route's `body_limit`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope)
        if limit is None:
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(send, receive, limit)
        try:
            if declared is None and is_api(scope):
                scope, limited = await _buffered(scope, receive, limit)
            else:
                limited = _limited(receive, limit)
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _refuse(send, receive, limit)


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


def too_large(limit: int) -> dict:
    """The error body of a 413 for `limit`."""
    message = f"The request body is over {limit} bytes."
    return error_body("payload_too_large", message, {"limit": limit})


async def _refuse(send, receive, limit: int) -> None:
    """Answer 413 at once; drop what follows of the body, then close."""
    body = json.dumps(too_large(limit)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    # The whole answer goes out now; the server closes once it is ended.
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await _drop_body(receive)
    await send({"type": "http.response.body", "body": b""})


async def _drop_body(receive) -> None:
    """Read and drop the rest of a refused body, within the linger bounds."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_SECONDS):
            while dropped <= LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
