"""The wire protocol's names and numbers, defined once (README: HTTP API, WebSocket).

Close codes, frame types and error codes: every module that sends or reads
one takes it from here, and the TypeScript client's copies are checked
against these by a test (``tests/sync/core/test_protocol.py``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class CloseCode(IntEnum):
    """Why the server closes a WebSocket (the README's close codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server shuts down: reconnect and resume by cursor
    TOO_BIG = 1009  # a frame past the size limit
    UNAVAILABLE = 1011  # the message store is out of reach: retry later
    BAD_REQUEST = 4400  # a bad `cursor` or `topics` on the connect URL
    UNAUTHENTICATED = 4401  # no credentials, or access revoked: do not retry
    FORBIDDEN_TOPIC = 4403  # the topic authorizer refused a connect URL topic
    SILENT = 4408  # nothing from the client for two heartbeats
    RESYNC = 4409  # messages were lost before delivery: reload, then resume
    SLOW_CONSUMER = 4413  # output waiting past the bound: resume by cursor
    THROTTLED = 4429  # too many frames, sockets or handshakes


class FrameType(StrEnum):
    """Protocol frames; any other type a client sends is a message."""

    ESTABLISHED = "connection.established"
    PING = "ping"
    PONG = "pong"
    SUBSCRIBE = "subscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"
    ACK = "ack"
    ERROR = "error"


class ErrorCode(StrEnum):
    """The one error vocabulary of HTTP bodies, error frames and logs."""

    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    INVALID_UNICODE = "invalid_unicode"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    RESERVED_TYPE = "reserved_type"
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PAYLOAD_TOO_DEEP = "payload_too_deep"
    PAYLOAD_TOO_COMPLEX = "payload_too_complex"
    FORBIDDEN_KEY = "forbidden_key"
    INVALID_TOPICS = "invalid_topics"
    FORBIDDEN_TOPIC = "forbidden_topic"
    INVALID_CORRELATION_ID = "invalid_correlation_id"
    INVALID_SINCE = "invalid_since"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_LIMIT = "invalid_limit"
    INVALID_WAIT = "invalid_wait"
    INVALID_CREDENTIALS = "invalid_credentials"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    CSRF_FAILED = "csrf_failed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    THROTTLED = "throttled"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    STORE_UNAVAILABLE = "store_unavailable"
    SERVER_ERROR = "server_error"


def error_body(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The error envelope: ``{"success": false, "error": {...}}``."""
    return {
        "success": False,
        "error": {"code": str(code), "message": message, "details": details or {}},
    }
