"""Message rules of SPEC §2 and §3, shared by every entry point.

HTTP views, WebSocket frames and the Python service all call these functions,
so the transports can never disagree about what is valid. Each rule raises
its own error class (see ``sync.core.exceptions``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync.core import exceptions
from sync.core.conf import MAX_PAYLOAD_DEPTH, MAX_TOPICS, sync_settings
from sync.core.jsontext import encode_value, is_valid_unicode

TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
# Topics become channel-layer group names, which allow no colon.
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOPIC = TOPIC_PATTERN.pattern.strip("^$")
# The grammar parse_topic_list() reads; MAX_TOPICS names at most.
TOPIC_LIST_PATTERN = f"^ *(?:{_TOPIC})? *(?:, *(?:{_TOPIC})? *)*$"
MAX_CORRELATION_ID_LENGTH = 128
# Room for the envelope around a maximal payload (type, ids, topics).
BODY_OVERHEAD_BYTES = 4096

# Lower case: clients may not pass for the server in any case ("DATA.updated").
# The protocol names are here so no tab can fake an ack or a subscription.
RESERVED_TYPES = frozenset(
    {
        "announcement",
        "error",
        "ping",
        "pong",
        "ack",
        "subscribe",
        "subscribed",
        "unsubscribe",
        "unsubscribed",
    }
)
RESERVED_PREFIXES = ("data.", "notification.", "system.", "sync.", "connection.")
# Keys that reach Object.prototype when a JS client merges a payload.
FORBIDDEN_KEYS = frozenset({"__proto__", "constructor", "prototype"})
# What nests in a payload (tuples only from Python callers).
CONTAINERS = (dict, list, tuple)

CLIENT_MESSAGE_FIELDS = frozenset({"type", "payload", "correlationId"})
FRAME_FIELDS = frozenset({"type", "payload", "id", "timestamp", "correlationId"})
SUBSCRIPTION_FIELDS = frozenset({"topics"})
BROADCAST_FIELDS = frozenset({"type", "payload", "topics"})


def max_body_bytes() -> int:
    """Largest request body or WebSocket frame accepted."""
    return sync_settings.MAX_PAYLOAD_BYTES + BODY_OVERHEAD_BYTES


@dataclass(frozen=True)
class MessageInput:
    """A validated message as a client or staff member submitted it."""

    type: str
    payload: dict[str, Any]
    correlation_id: str | None = None
    topics: tuple[str, ...] = ()
    # The payload as stored and sent; None: encode `payload` when publishing.
    payload_json: bytes | None = None


def validate_type(value: Any, *, from_client: bool) -> str:
    """Check the type pattern, and refuse reserved types from clients."""
    if not isinstance(value, str) or not TYPE_PATTERN.fullmatch(value):
        raise exceptions.InvalidType(details={"field": "type"})
    if from_client and is_reserved_type(value):
        raise exceptions.ReservedType(
            f"Message type {value!r} is reserved for the server.",
            details={"field": "type"},
        )
    return value


def is_reserved_type(value: str) -> bool:
    """True for types only server publishers may use, in any letter case."""
    folded = value.lower()
    return folded in RESERVED_TYPES or folded.startswith(RESERVED_PREFIXES)


def validate_payload(value: Any, *, parsed: bool = False) -> bytes:
    """Check a payload against the rules; return it encoded, ready to store.

    The encoded text (compact UTF-8 JSON) is what the store keeps and every
    reader receives, so a caller that mutates its dict after publishing
    cannot change a message already accepted. `parsed` says the value came
    from ``loads_strict``, which refuses numbers no float can hold, so its
    floats need no check for NaN or Infinity.
    """
    if not isinstance(value, dict):
        raise exceptions.InvalidPayload(details={"field": "payload"})
    check_payload_shape(value, finite_numbers=parsed)
    encoded = encode_value(value)
    limit = sync_settings.MAX_PAYLOAD_BYTES
    size = len(encoded)
    if size > limit:
        raise exceptions.PayloadTooLarge(
            f"Payload is {size} bytes; the limit is {limit}.",
            details={"field": "payload", "size": size, "limit": limit},
        )
    return encoded


def check_payload_shape(
    payload: dict[str, Any], *, finite_numbers: bool = False
) -> None:
    """Walk the payload once, a level at a time: values, depth, poisonous keys.

    Each level is one list of containers, and every step over it is a
    comprehension or a builtin (no Python work per container in the loop's
    own body): chains of nested lists cost what a flat list does. Values
    are counted by the sizes of the containers holding them, so the walk
    stops as soon as the count passes ``MAX_PAYLOAD_NODES``, after as many
    steps at most. Empty containers are counted and checked for depth,
    never descended into.
    """
    limit = sync_settings.MAX_PAYLOAD_NODES
    values, depth = 1, 1
    level: list[Any] = [payload]
    while level:
        dicts = [node for node in level if isinstance(node, dict)]
        if dicts and not all(map(FORBIDDEN_KEYS.isdisjoint, dicts)):
            _refuse_forbidden_key(dicts)
        values += sum(map(len, level))
        if values > limit:
            raise exceptions.PayloadTooComplex(
                f"Payload holds more than {limit} values.",
                details={"field": "payload", "limit": limit},
            )
        children = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not finite_numbers:
            _check_numbers(children)
        inner = [child for child in children if isinstance(child, CONTAINERS)]
        if inner and depth >= MAX_PAYLOAD_DEPTH:
            raise exceptions.PayloadTooDeep(
                f"Payload nests deeper than {MAX_PAYLOAD_DEPTH} levels.",
                details={"field": "payload", "limit": MAX_PAYLOAD_DEPTH},
            )
        level = [child for child in inner if child]
        depth += 1


def _refuse_forbidden_key(dicts: list[dict[Any, Any]]) -> None:
    for node in dicts:
        if not FORBIDDEN_KEYS.isdisjoint(node):
            forbidden = sorted(FORBIDDEN_KEYS.intersection(node))
            raise exceptions.ForbiddenKey(
                details={"field": "payload", "key": forbidden[0]}
            )


def _check_numbers(children: Collection[Any]) -> None:
    """NaN and Infinity: JSON has no such numbers (a Python caller's values)."""
    for child in children:
        if isinstance(child, float) and not math.isfinite(child):
            raise exceptions.InvalidPayload(
                "Payload must contain only JSON values (no NaN or Infinity).",
                details={"field": "payload"},
            )


def validate_topics(value: Any) -> tuple[str, ...]:
    """Check a list of topic names; duplicates collapse, order is kept."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise exceptions.InvalidTopics(details={"field": "topics"})
    if len(value) > MAX_TOPICS:
        raise exceptions.InvalidTopics(
            f"At most {MAX_TOPICS} topics.",
            details={"field": "topics", "max": MAX_TOPICS},
        )
    for topic in value:
        if not isinstance(topic, str) or not TOPIC_PATTERN.fullmatch(topic):
            raise exceptions.InvalidTopics(details={"field": "topics"})
    return tuple(dict.fromkeys(value))


def validate_topic_field(value: Any) -> tuple[str, ...]:
    """A `topics` field sent on the wire: an array, never null."""
    if value is None:
        raise exceptions.InvalidTopics(
            "topics must be an array; leave it out to mean everyone.",
            details={"field": "topics"},
        )
    return validate_topics(value)


def parse_topic_list(text: str | None) -> tuple[str, ...]:
    """Parse ``a,b`` from a query string into validated topics.

    Spaces around names and empty items are ignored (``a, b,``), as
    TOPIC_LIST_PATTERN says for the OpenAPI schema.
    """
    if not text:
        return ()
    items = (item.strip(" ") for item in text.split(","))
    return validate_topics([item for item in items if item])


def validate_correlation_id(value: Any) -> str | None:
    """Accept null or a string of at most 128 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CORRELATION_ID_LENGTH:
        raise exceptions.InvalidCorrelationId(details={"field": "correlationId"})
    if not is_valid_unicode(value):
        raise exceptions.InvalidUnicode(details={"field": "correlationId"})
    return value


def check_fields(
    data: Any, allowed: frozenset[str], required: Iterable[str] = ()
) -> Mapping[str, Any]:
    """Require a JSON object with only `allowed` fields and all `required` ones."""
    if not isinstance(data, dict):
        raise exceptions.InvalidMessage()
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise exceptions.UnknownField(
            f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.",
            details={"field": unknown[0], "allowed": sorted(allowed)},
        )
    for name in required:
        if name not in data:
            raise exceptions.MissingField(
                f"Field {name!r} is required.", details={"field": name}
            )
    return data


def validate_client_message(data: Any) -> MessageInput:
    """Validate what a client sends (POST /send body or WebSocket frame).

    `data` comes from ``loads_strict``: a private object nobody else holds.
    """
    fields = check_fields(data, CLIENT_MESSAGE_FIELDS)
    message_type = validate_type(fields.get("type"), from_client=True)
    payload = fields.get("payload", {})
    return MessageInput(
        type=message_type,
        payload=payload,
        payload_json=validate_payload(payload, parsed=True),
        correlation_id=validate_correlation_id(fields.get("correlationId")),
    )


def validate_broadcast(data: Any) -> MessageInput:
    """Validate a staff broadcast: reserved types allowed, topics optional."""
    fields = check_fields(data, BROADCAST_FIELDS)
    message_type = validate_type(fields.get("type"), from_client=False)
    payload = fields.get("payload", {})
    return MessageInput(
        type=message_type,
        payload=payload,
        payload_json=validate_payload(payload, parsed=True),
        topics=validate_topic_field(fields["topics"]) if "topics" in fields else (),
    )


def validate_frame(data: Any) -> Mapping[str, Any]:
    """Check the envelope every WebSocket frame shares (SPEC §5)."""
    fields = check_fields(data, FRAME_FIELDS)
    frame_id = fields.get("id")
    if frame_id is not None and (
        isinstance(frame_id, bool)
        or not isinstance(frame_id, str | int)
        or len(str(frame_id)) > MAX_CORRELATION_ID_LENGTH
    ):
        raise exceptions.InvalidMessage(
            "id must be a string or an integer.", details={"field": "id"}
        )
    validate_correlation_id(fields.get("correlationId"))
    return fields


def validate_client_frame(frame: Mapping[str, Any]) -> MessageInput:
    """A message frame (not ping/pong/subscribe), checked like POST /send."""
    return validate_client_message(
        {key: frame[key] for key in CLIENT_MESSAGE_FIELDS if key in frame}
    )


def validate_subscription(frame: Mapping[str, Any]) -> tuple[str, ...]:
    """The topics of a subscribe/unsubscribe frame: ``{"topics": [...]}``."""
    payload = check_fields(frame.get("payload", {}), SUBSCRIPTION_FIELDS)
    if "topics" not in payload:
        raise exceptions.InvalidTopics(
            "topics is required.", details={"field": "topics"}
        )
    return validate_topic_field(payload["topics"])
