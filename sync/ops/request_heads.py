"""What a request head may cost, and how the servers' patches refuse one.

A request head (request line and headers, WebSocket handshakes included) is
read by the ASGI server before the application exists, so its bounds are
enforced by small patches to each server (``sync.ops.uvicorn_limits``,
``sync.ops.daphne_limits``); this module holds what they share: the settings,
and the raw HTTP answer that refuses a connection and closes it.
"""

from __future__ import annotations

import http
import json
import logging
from dataclasses import dataclass

from sync.core.conf import sync_settings
from sync.core.protocol import error_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLimits:
    """Bytes a head may take, and seconds a connection may take to send it."""

    max_bytes: int
    timeout: float


def head_limits() -> HeadLimits:
    """The limits in the settings now (read once per connection)."""
    return HeadLimits(
        max_bytes=sync_settings.MAX_REQUEST_HEAD_BYTES,
        timeout=sync_settings.REQUEST_HEAD_TIMEOUT,
    )


def refusal(status: int, error: dict) -> bytes:
    """A whole HTTP/1.1 answer with `error` (an ``error_body``), then a close."""
    body = json.dumps(error).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def head_too_large(limits: HeadLimits) -> bytes:
    """431 for a head past `limits.max_bytes` (and its log line)."""
    logger.info("request refused", extra={"code": 431, "reason": "head_too_large"})
    message = f"The request line and headers are over {limits.max_bytes} bytes."
    return refusal(
        431, error_body("headers_too_large", message, {"limit": limits.max_bytes})
    )


def head_timed_out(limits: HeadLimits) -> bytes:
    """408 for a head unfinished after `limits.timeout` s (and its log line)."""
    logger.info("request refused", extra={"code": 408, "reason": "head_timeout"})
    message = f"The request line and headers took over {limits.timeout:g} seconds."
    return refusal(
        408, error_body("request_timeout", message, {"limit": limits.timeout})
    )
