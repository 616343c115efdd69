"""OpenAPI pieces (drf-spectacular): auth schemes, closed bodies, error answers.

The schema at /api/schema/ must say exactly what the API does, statuses and
limits included: clients are generated from it, and a schemathesis test
(tests/sync/http/test_schema.py) holds the API to it.
"""

from __future__ import annotations

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from sync.core.conf import MAX_TOPICS
from sync.core.validation import FORBIDDEN_KEYS, TOPIC_LIST_PATTERN
from sync.http.query_params import MAX_LIMIT
from sync.http.serializers import PAYLOAD_RULES, ErrorResponse
from sync.store.cursors import CURSOR_PATTERN

ERROR_DESCRIPTIONS = {
    400: "Invalid request: the error code says which rule was broken.",
    401: "Not authenticated: not_authenticated, authentication_failed.",
    403: "Forbidden.",
    413: "payload_too_large: the body or the payload is over its limit.",
    415: "unsupported_media_type: the body must be application/json.",
    429: "throttled: too many requests; retry after Retry-After seconds.",
    503: "store_unavailable: the message store cannot be reached (Retry-After).",
}
# The 400 codes of JSON bodies, then of message bodies (SPEC §2).
BODY_CODES = "invalid_json, invalid_unicode, invalid_message, unknown_field"
MESSAGE_CODES = (
    f"{BODY_CODES}, invalid_type, invalid_payload, payload_too_deep, forbidden_key"
)

RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    {"type": "integer", "minimum": 0},
    location=OpenApiParameter.HEADER,
    required=True,
    description="Seconds to wait before retrying.",
    response=[429],
)
TOKEN_CHALLENGE = OpenApiParameter(
    "WWW-Authenticate",
    {"type": "string", "enum": ["Token"]},
    location=OpenApiParameter.HEADER,
    required=True,
    description="How to authenticate: `Authorization: Token <key>`.",
    response=[401],
)

# GET /api/sync/poll, as sync.http.query_params reads it.
POLL_PARAMETERS = [
    OpenApiParameter(
        "since",
        {"type": "integer", "minimum": 0},
        description="Milliseconds: messages published after this time. "
        "At most 60 s ahead of the server's clock (else 400 invalid_since). "
        "Pass back the previous answer's `timestamp`.",
    ),
    OpenApiParameter(
        "cursor",
        {"type": "string", "pattern": CURSOR_PATTERN.pattern},
        description="A `cursor` this server gave out; wins over `since`.",
    ),
    OpenApiParameter(
        "topics",
        {"type": "string", "pattern": TOPIC_LIST_PATTERN},
        description=f"Comma-separated topics (at most {MAX_TOPICS}) whose "
        "broadcasts to include; spaces around names and empty items are ignored. "
        "A topic the authorizer refuses is 403 forbidden_topic.",
    ),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        description="Most messages in one answer.",
    ),
    OpenApiParameter(
        "wait",
        {"type": "number", "minimum": 0},
        description="Long poll: answer as soon as a message arrives, else empty "
        "after min(wait, SYNC_POLL_MAX_WAIT) seconds. Too many waiting polls "
        "of one user: 429.",
    ),
]


class CsrfSessionScheme(SessionScheme):
    """Document CsrfSessionAuthentication as the cookie session it is."""

    target_class = "sync.http.authentication.CsrfSessionAuthentication"


class ClosedBodyExtension(OpenApiSerializerExtension):
    """Request bodies refuse unknown fields: say additionalProperties false."""

    target_class = "sync.http.serializers.ClosedSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(
            self.target, direction, bypass_extensions=True
        )
        return {**schema, "additionalProperties": False}


class EmptyMeansAbsentSchema(AutoSchema):
    """For views that read `name=` as if `name` were not given at all.

    OpenAPI says so with allowEmptyValue, which drf-spectacular cannot emit.
    """

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        for parameter in (operation or {}).get("parameters", []):
            if parameter["in"] == "query":
                parameter["allowEmptyValue"] = True
        return operation


def _without_forbidden_keys(schema: dict) -> dict:
    """`schema` for objects that hold none of FORBIDDEN_KEYS (OpenAPI 3.0 terms)."""
    refused = [{"required": [key]} for key in sorted(FORBIDDEN_KEYS)]
    return {**schema, "type": "object", "not": {"anyOf": refused}}


class PayloadFieldExtension(OpenApiSerializerFieldExtension):
    """A payload: a JSON object whose objects, at any depth, avoid FORBIDDEN_KEYS."""

    target_class = "sync.http.serializers.PayloadField"
    value_name = "PayloadValue"

    def map_serializer_field(self, auto_schema, direction):
        value = self._value_component(auto_schema)
        return _without_forbidden_keys(
            {"additionalProperties": value.ref, "description": PAYLOAD_RULES}
        )

    def _value_component(self, auto_schema) -> ResolvedComponent:
        """The recursive JSON value inside a payload, registered once."""
        name = self.value_name
        ref = {"$ref": f"#/components/schemas/{name}"}
        schema = {
            "description": "Any JSON value inside a payload.",
            "nullable": True,
            "anyOf": [
                _without_forbidden_keys({"additionalProperties": ref}),
                {"type": "array", "items": ref},
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
            ],
        }
        component = ResolvedComponent(name, ResolvedComponent.SCHEMA, schema, name)
        auto_schema.registry.register_on_missing(component)
        return component


def responses(
    status: int, body, *errors: int, notes: dict[int, str] | None = None
) -> dict:
    """The success answer, and the error envelope for each status in `errors`.

    `notes` replaces the generic description of a status for this endpoint.
    """
    descriptions = {**ERROR_DESCRIPTIONS, **(notes or {})}
    answers: dict = {status: body}
    for error in errors:
        answers[error] = OpenApiResponse(ErrorResponse, descriptions[error])
    return answers
