"""Shapes of the API's bodies, for the OpenAPI schema at /api/schema/.

Validation itself lives in ``sync.core.validation`` (shared with WebSocket); these
serializers only describe the wire format, with the same limits, so that
clients generated from the schema send what the API accepts.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from sync.core.conf import MAX_PAYLOAD_DEPTH, MAX_TOPICS
from sync.core.validation import (
    FORBIDDEN_KEYS,
    MAX_CORRELATION_ID_LENGTH,
    RESERVED_PREFIXES,
    RESERVED_TYPES,
    TOPIC_PATTERN,
    TYPE_PATTERN,
)

MAX_NAME_LENGTH = 64
PAYLOAD_RULES = (
    "A JSON object of at most SYNC_MAX_PAYLOAD_BYTES (default 65536) bytes "
    f"serialized as UTF-8, nesting at most {MAX_PAYLOAD_DEPTH} levels, without "
    f"the keys {', '.join(sorted(FORBIDDEN_KEYS))} at any depth (413 "
    "payload_too_large, 400 payload_too_deep, 400 forbidden_key). Every string "
    "must be valid Unicode: no lone surrogates (400 invalid_unicode). Default {}."
)


def case_insensitive(pattern: str) -> str:
    """`pattern` with each letter as [xX]: OpenAPI patterns take no flags."""
    return re.sub(r"[A-Za-z]", lambda m: f"[{m[0].lower()}{m[0].upper()}]", pattern)


def reserved_type_pattern() -> str:
    """What validation.is_reserved_type() refuses from clients, as a pattern."""
    names = "|".join(sorted(RESERVED_TYPES))
    prefixes = "|".join(re.escape(prefix) for prefix in RESERVED_PREFIXES)
    return case_insensitive(f"^(?:(?:{names})$|{prefixes})")


@extend_schema_field(
    {
        "type": "string",
        "pattern": TYPE_PATTERN.pattern,
        "maxLength": MAX_NAME_LENGTH,
        "not": {"pattern": reserved_type_pattern()},
    }
)
class ClientTypeField(serializers.RegexField):
    """A message type a client may send: the pattern, minus reserved types."""

    def __init__(self, **options) -> None:
        super().__init__(TYPE_PATTERN.pattern, max_length=MAX_NAME_LENGTH, **options)


class PayloadField(serializers.DictField):
    """A message payload: a JSON object (sync.http.schema documents its rules)."""


def topic_list(**options) -> serializers.ListField:
    """Topic names as the API checks them (SPEC §3)."""
    return serializers.ListField(
        child=serializers.RegexField(TOPIC_PATTERN.pattern, max_length=MAX_NAME_LENGTH),
        max_length=MAX_TOPICS,
        **options,
    )


class ClosedSerializer(serializers.Serializer):
    """A request body whose unknown fields are refused (400 unknown_field).

    sync.http.schema documents subclasses with additionalProperties: false.
    """


# Received messages and polling ------------------------------------------------


class MessageSerializer(serializers.Serializer):
    """The envelope every received message has (SPEC §2)."""

    id = serializers.CharField()
    type = serializers.RegexField(TYPE_PATTERN.pattern, max_length=MAX_NAME_LENGTH)
    payload = serializers.DictField()
    timestamp = serializers.IntegerField(
        min_value=0, help_text="Server time in ms when published."
    )
    userId = serializers.CharField(
        allow_null=True, help_text="The recipient user's id; null for a broadcast."
    )
    topics = serializers.ListField(
        child=serializers.CharField(),
        help_text="The broadcast's topic filter; [] means everyone.",
    )
    cursor = serializers.CharField(
        help_text="This message's position: pass it back as `cursor` to resume."
    )
    correlationId = serializers.CharField(
        allow_null=True, max_length=MAX_CORRELATION_ID_LENGTH
    )


class PollResponse(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always true.")
    messages = MessageSerializer(many=True, help_text="Oldest first.")
    timestamp = serializers.IntegerField(min_value=0, help_text="Pass back as `since`.")
    count = serializers.IntegerField(min_value=0, help_text="len(messages)")
    cursor = serializers.CharField(help_text="Pass back as `cursor`.")
    hasMore = serializers.BooleanField(help_text="More messages wait: poll again.")
    gap = serializers.BooleanField(help_text="Messages were dropped: reload state.")


# Sending and broadcasting -----------------------------------------------------


class SendRequest(ClosedSerializer):
    """A message from the client to all of its own connections."""

    type = ClientTypeField(
        help_text="Types reserved for the server are refused (400 reserved_type)."
    )
    payload = PayloadField(required=False)
    correlationId = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=MAX_CORRELATION_ID_LENGTH,
    )


class SendResponse(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always true.")
    messageId = serializers.CharField()
    timestamp = serializers.IntegerField(min_value=0)


class BroadcastRequest(ClosedSerializer):
    """A staff message to every connection, or to those following `topics`."""

    type = serializers.RegexField(
        TYPE_PATTERN.pattern,
        max_length=MAX_NAME_LENGTH,
        help_text="Reserved types are allowed here.",
    )
    payload = PayloadField(required=False)
    topics = topic_list(
        required=False,
        help_text="Only connections following one of these get it; "
        "leave out (not null) for everyone. Duplicates collapse.",
    )


class BroadcastResponse(SendResponse):
    topics = serializers.ListField(
        child=serializers.CharField(), help_text="[] when none were given."
    )


# Status -----------------------------------------------------------------------


class WebsocketStatus(serializers.Serializer):
    enabled = serializers.BooleanField()
    connections = serializers.IntegerField(min_value=0, help_text="Open sockets.")
    totalConnections = serializers.IntegerField(
        min_value=0, help_text="Sockets opened since the server started."
    )
    subscriptions = serializers.IntegerField(min_value=0)


class PollingStatus(serializers.Serializer):
    enabled = serializers.BooleanField()
    endpoint = serializers.CharField()
    queues = serializers.IntegerField(min_value=0)
    messages = serializers.IntegerField(min_value=0)


class Status(serializers.Serializer):
    websocket = WebsocketStatus()
    polling = PollingStatus()
    lastCheck = serializers.IntegerField(min_value=0, help_text="Server time in ms.")


class StatusResponse(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always true.")
    status = Status()


# Tokens -----------------------------------------------------------------------


class TokenRequest(ClosedSerializer):
    """A user's credentials."""

    username = serializers.CharField()
    password = serializers.CharField()


class TokenResponse(serializers.Serializer):
    token = serializers.CharField()


# Errors -----------------------------------------------------------------------


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="Stable: what clients match on.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.DictField(help_text="Facts about the error, per code.")


class ErrorResponse(serializers.Serializer):
    """The envelope of every error (SPEC §4)."""

    success = serializers.BooleanField(help_text="Always false.")
    error = ErrorDetail()
