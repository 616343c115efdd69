"""Errors with stable codes, shared by HTTP bodies, WebSocket frames and logs.

Each class is one entry of the error vocabulary: ``default_code`` is what
clients match on, ``status_code`` is the HTTP status it maps to, and
``wait``, when set, the seconds a client should wait (``Retry-After``).
They know nothing of HTTP frameworks: the HTTP wing turns them into answers
(``sync.http.exception_handler``), the WebSocket wing into error frames.
"""

from __future__ import annotations

from http import HTTPStatus as status
from typing import Any

from sync.core.protocol import ErrorCode


class SyncError(Exception):
    """Base of every Realtime Sync error; carries optional ``details``."""

    status_code: int = status.BAD_REQUEST
    default_code = ErrorCode.INVALID_REQUEST
    default_detail = "The request is invalid."
    wait: int | None = None

    def __init__(
        self,
        detail: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = str(detail) if detail is not None else self.default_detail
        self.details = details or {}
        super().__init__(self.message)


class InvalidJSON(SyncError):
    """The body or frame is not valid JSON."""

    default_code = ErrorCode.INVALID_JSON
    default_detail = "The body is not valid JSON."


class InvalidUnicode(SyncError):
    """A string holds a lone surrogate (such as "\\udc00"): not valid Unicode."""

    default_code = ErrorCode.INVALID_UNICODE
    default_detail = "Strings must be valid Unicode (no lone surrogates)."


class InvalidMessage(SyncError):
    """The body or frame is JSON but not an object."""

    default_code = ErrorCode.INVALID_MESSAGE
    default_detail = "Expected a JSON object."


class UnknownField(SyncError):
    """The object has a field the contract does not define."""

    default_code = ErrorCode.UNKNOWN_FIELD
    default_detail = "Unknown field."


class MissingField(SyncError):
    """A required field is absent."""

    default_code = ErrorCode.MISSING_FIELD
    default_detail = "A required field is missing."


class InvalidType(SyncError):
    """The message type is missing, not a string, or breaks the pattern."""

    default_code = ErrorCode.INVALID_TYPE
    default_detail = "Message type must match ^[A-Za-z][A-Za-z0-9_.:-]*$ (1-64 chars)."


class ReservedType(SyncError):
    """Clients may not send types reserved for server publishers."""

    status_code = status.BAD_REQUEST
    default_code = ErrorCode.RESERVED_TYPE
    default_detail = "This message type is reserved for the server."


class InvalidPayload(SyncError):
    """The payload is not a JSON object or cannot be serialized as JSON."""

    default_code = ErrorCode.INVALID_PAYLOAD
    default_detail = "Payload must be a JSON object."


class PayloadTooLarge(SyncError):
    """The payload, body or frame is over the configured size."""

    status_code = status.REQUEST_ENTITY_TOO_LARGE
    default_code = ErrorCode.PAYLOAD_TOO_LARGE
    default_detail = "Payload is too large."


class PayloadTooDeep(SyncError):
    """The payload nests deeper than allowed."""

    default_code = ErrorCode.PAYLOAD_TOO_DEEP
    default_detail = "Payload nests too deeply."


class PayloadTooComplex(SyncError):
    """The payload holds more JSON values than allowed (``MAX_PAYLOAD_NODES``)."""

    default_code = ErrorCode.PAYLOAD_TOO_COMPLEX
    default_detail = "Payload holds too many values."


class ForbiddenKey(SyncError):
    """The payload uses a key that poisons JavaScript objects."""

    default_code = ErrorCode.FORBIDDEN_KEY
    default_detail = "Payload keys __proto__, constructor and prototype are refused."


class InvalidTopics(SyncError):
    """Topics are not a list of valid topic names."""

    default_code = ErrorCode.INVALID_TOPICS
    default_detail = (
        "Topics must be a list of names matching ^[A-Za-z0-9][A-Za-z0-9_.-]*$."
    )


class ForbiddenTopic(SyncError):
    """The topic authorizer refused one of the topics asked for."""

    status_code = status.FORBIDDEN
    default_code = ErrorCode.FORBIDDEN_TOPIC
    default_detail = "You may not subscribe to this topic."


class InvalidCorrelationId(SyncError):
    """The correlation id is not a short string."""

    default_code = ErrorCode.INVALID_CORRELATION_ID
    default_detail = "correlationId must be a string of at most 128 characters."


class InvalidSince(SyncError):
    """`since` is not a non-negative integer of milliseconds."""

    default_code = ErrorCode.INVALID_SINCE
    default_detail = "since must be a non-negative integer (milliseconds)."


class InvalidCursor(SyncError):
    """The cursor was not issued by this server."""

    default_code = ErrorCode.INVALID_CURSOR
    default_detail = "cursor is not a cursor issued by this server."


class InvalidLimit(SyncError):
    """`limit` is outside 1-1000."""

    default_code = ErrorCode.INVALID_LIMIT
    default_detail = "limit must be an integer from 1 to 1000."


class InvalidWait(SyncError):
    """`wait` is not a non-negative number of seconds."""

    default_code = ErrorCode.INVALID_WAIT
    default_detail = "wait must be a non-negative number of seconds."


class InvalidCredentials(SyncError):
    """Username and password do not match an active user."""

    default_code = ErrorCode.INVALID_CREDENTIALS
    default_detail = "Unable to log in with the provided credentials."


class CsrfFailed(SyncError):
    """A session-authenticated unsafe request came without a valid CSRF token."""

    status_code = status.FORBIDDEN
    default_code = ErrorCode.CSRF_FAILED
    default_detail = "CSRF verification failed."


class ServiceUnavailable(SyncError):
    """A backing service (the message store) cannot be reached.

    Answered with ``Retry-After`` (DRF's handler sends ``wait``), so clients
    back off instead of retrying at once against a store that is away.
    """

    status_code = status.SERVICE_UNAVAILABLE
    wait = 2  # seconds, in Retry-After
    default_code = ErrorCode.STORE_UNAVAILABLE
    default_detail = "The message store is unavailable; try again shortly."


class StoreUnavailable(ServiceUnavailable):
    """The message store's Redis cannot be reached, or answers too slowly."""


class TooManyWaitingPolls(SyncError):
    """The user already holds SYNC_POLL_MAX_WAITING_PER_USER waiting long polls."""

    status_code = status.TOO_MANY_REQUESTS
    default_code = ErrorCode.THROTTLED
    default_detail = "Too many long polls waiting at once; retry shortly."
    wait = 1  # DRF turns this into Retry-After


class LoginThrottled(SyncError):
    """Too many failed logins from this address or for this username."""

    status_code = status.TOO_MANY_REQUESTS
    default_code = ErrorCode.THROTTLED
    default_detail = "Too many failed login attempts; retry later."

    def __init__(self, wait: int) -> None:
        super().__init__(details={"retryAfter": wait})
        self.wait = wait  # DRF turns this into Retry-After
