"""The message rules of SPEC §2 and §3 (sync/core/validation.py), one at a time.

Each rule has a rejecting case that checks the error class and its stable
`code` (what clients match on), and an accepting case at the boundary.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.core import exceptions
from sync.core.validation import (
    TOPIC_LIST_PATTERN,
    parse_topic_list,
    validate_broadcast,
    validate_client_message,
    validate_correlation_id,
    validate_payload,
    validate_subscription,
    validate_topics,
    validate_type,
)

RESERVED_TYPES = ["announcement", "error", "ping", "pong"]
# Names of server frames (and WebSocket protocol frames): a tab sending one
# would show its other tabs what looks like the server speaking.
PROTOCOL_TYPES = ["ack", "subscribed", "unsubscribed", "subscribe", "unsubscribe"]
LONE_SURROGATE = "\udc00"
RESERVED_PREFIXES = ["data.", "notification.", "system.", "sync.", "connection."]


@contextmanager
def rejected(error_class: type[exceptions.SyncError], code: str):
    """Expect `error_class` with the stable `code` from the block."""
    with pytest.raises(error_class) as caught:
        yield
    assert caught.value.code == code


def nested_dicts(depth: int) -> dict:
    """A payload whose objects nest `depth` levels (the payload itself is 1)."""
    payload: dict = {}
    for _ in range(depth - 1):
        payload = {"child": payload}
    return payload


def decoded(encoded: bytes):
    """What validate_payload accepted, read back."""
    assert isinstance(encoded, bytes)
    return json.loads(encoded)


def payload_of_size(size: int) -> dict:
    """A payload that serializes (compactly) to exactly `size` bytes."""
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    payload = {"k": "x" * (size - overhead)}
    assert len(json.dumps(payload, separators=(",", ":")).encode()) == size
    return payload


# Message type -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1chat",
        "_chat",
        ".chat",
        "chat room",
        "chat/room",
        "chät",
        "chat!",
        "a" * 65,
        None,
        42,
        ["chat"],
    ],
)
def test_type_breaking_the_pattern_is_invalid_type(value):
    with rejected(exceptions.InvalidType, "invalid_type"):
        validate_type(value, from_client=True)


@pytest.mark.parametrize(
    "value", ["c", "chat", "todo.add", "a:b_c-d.e", "Chat2", "a" * 64]
)
def test_type_matching_the_pattern_is_accepted(value):
    assert validate_type(value, from_client=True) == value


def test_type_of_64_chars_is_accepted_and_65_rejected():
    assert validate_type("t" * 64, from_client=True) == "t" * 64
    with rejected(exceptions.InvalidType, "invalid_type"):
        validate_type("t" * 65, from_client=True)


@pytest.mark.parametrize("value", ["chat\n", "t" * 64 + "\n"])
def test_type_with_trailing_newline_is_invalid_type(value):
    with rejected(exceptions.InvalidType, "invalid_type"):
        validate_type(value, from_client=True)


@pytest.mark.parametrize("value", RESERVED_TYPES)
def test_reserved_type_is_refused_from_clients(value):
    with rejected(exceptions.ReservedType, "reserved_type"):
        validate_type(value, from_client=True)


@pytest.mark.parametrize("prefix", RESERVED_PREFIXES)
def test_reserved_prefix_is_refused_from_clients(prefix):
    with rejected(exceptions.ReservedType, "reserved_type"):
        validate_type(f"{prefix}updated", from_client=True)


@pytest.mark.parametrize("value", PROTOCOL_TYPES)
def test_protocol_names_are_refused_from_clients(value):
    with rejected(exceptions.ReservedType, "reserved_type"):
        validate_type(value, from_client=True)


@pytest.mark.parametrize(
    "value",
    [
        "DATA.updated",
        "Data.Updated",
        "Announcement",
        "ERROR",
        "Ping",
        "ACK",
        "Subscribed",
        "UnSubscribed",
        "SYSTEM.restart",
        "Connection.established",
    ],
)
def test_reserved_types_are_refused_in_any_letter_case(value):
    with rejected(exceptions.ReservedType, "reserved_type"):
        validate_type(value, from_client=True)


@pytest.mark.parametrize(
    "value",
    [
        *RESERVED_TYPES,
        *PROTOCOL_TYPES,
        "DATA.updated",
        "Announcement",
        *(f"{prefix}updated" for prefix in RESERVED_PREFIXES),
    ],
)
def test_reserved_types_are_allowed_from_the_server(value):
    assert validate_type(value, from_client=False) == value


@pytest.mark.parametrize(
    "value", ["data", "sync", "pinged", "errors", "announcements", "my.data.x"]
)
def test_names_that_only_resemble_reserved_ones_are_client_types(value):
    assert validate_type(value, from_client=True) == value


def test_server_types_still_follow_the_pattern():
    with rejected(exceptions.InvalidType, "invalid_type"):
        validate_type("data updated", from_client=False)


# Payload ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], ["a"], "text", 1, 1.5, True])
def test_payload_that_is_not_an_object_is_invalid_payload(value):
    with rejected(exceptions.InvalidPayload, "invalid_payload"):
        validate_payload(value)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_payload_with_nan_or_infinity_is_invalid_payload(number):
    with rejected(exceptions.InvalidPayload, "invalid_payload"):
        validate_payload({"value": {"deep": [number]}})


def test_payload_with_a_non_json_value_is_invalid_payload():
    with rejected(exceptions.InvalidPayload, "invalid_payload"):
        validate_payload({"value": object()})


def test_payload_exactly_at_the_byte_limit_is_accepted(sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    payload = payload_of_size(100)
    assert decoded(validate_payload(payload)) == payload


def test_payload_one_byte_over_the_limit_is_payload_too_large(sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    with rejected(exceptions.PayloadTooLarge, "payload_too_large"):
        validate_payload(payload_of_size(101))


def test_payload_too_large_reports_size_and_limit(sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    with pytest.raises(exceptions.PayloadTooLarge) as caught:
        validate_payload(payload_of_size(150))
    assert caught.value.details == {"field": "payload", "size": 150, "limit": 100}
    assert caught.value.status_code == 413


def test_payload_size_counts_bytes_not_characters(sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    # 68 characters, but at least 128 bytes however "é" is encoded.
    with rejected(exceptions.PayloadTooLarge, "payload_too_large"):
        validate_payload({"k": "é" * 60})


def test_payload_nested_32_levels_is_accepted():
    payload = nested_dicts(32)
    assert decoded(validate_payload(payload)) == payload


def test_payload_nested_33_levels_is_payload_too_deep():
    with rejected(exceptions.PayloadTooDeep, "payload_too_deep"):
        validate_payload(nested_dicts(33))


def test_lists_count_as_nesting_levels():
    # 1 object + 31 lists = 32 levels; one more list makes 33.
    accepted: object = []
    for _ in range(30):
        accepted = [accepted]
    assert decoded(validate_payload({"list": accepted})) == {"list": accepted}
    with rejected(exceptions.PayloadTooDeep, "payload_too_deep"):
        validate_payload({"list": [accepted]})


def test_very_deep_payload_is_refused_without_recursion_error():
    with rejected(exceptions.PayloadTooDeep, "payload_too_deep"):
        validate_payload(nested_dicts(100_000))


@pytest.mark.parametrize("key", ["__proto__", "constructor", "prototype"])
@pytest.mark.parametrize(
    "make_payload",
    [
        pytest.param(lambda key: {key: {}}, id="top-level"),
        pytest.param(lambda key: {"a": {"b": {key: 1}}}, id="nested-dict"),
        pytest.param(lambda key: {"items": [1, {key: 1}]}, id="inside-list"),
        pytest.param(lambda key: {"a": [[{"b": [{key: None}]}]]}, id="deep-mixed"),
    ],
)
def test_poisonous_keys_are_forbidden_anywhere(key, make_payload):
    with rejected(exceptions.ForbiddenKey, "forbidden_key"):
        validate_payload(make_payload(key))


@pytest.mark.parametrize("key", ["__proto__", "constructor", "prototype"])
def test_poisonous_words_are_fine_as_values(key):
    payload = {"name": key, "list": [key]}
    assert decoded(validate_payload(payload)) == payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"text": LONE_SURROGATE}, id="value"),
        pytest.param({LONE_SURROGATE: 1}, id="key"),
        pytest.param({"a": [{"b": "ok" + "\ud800"}]}, id="nested"),
    ],
)
def test_payload_with_a_lone_surrogate_is_invalid_unicode(payload):
    # Python publishers can build such strings; JSON would escape them and
    # store a message no later read could encode.
    with rejected(exceptions.InvalidUnicode, "invalid_unicode"):
        validate_payload(payload)


def test_payload_with_characters_beyond_the_bmp_is_accepted():
    # JSON writes these as surrogate pairs ("\\ud83d\\ude00"): valid Unicode.
    payload = {"emoji": "\U0001f600"}
    assert decoded(validate_payload(payload)) == payload


def test_accepted_payload_is_kept_as_text_the_caller_cannot_change():
    original = {"items": [1, 2], "nested": {"x": 1}}
    accepted = validate_payload(original)
    original["items"].append(3)
    original["nested"]["x"] = 2
    assert decoded(accepted) == {"items": [1, 2], "nested": {"x": 1}}


def test_accepted_payload_is_compact_utf8_json():
    assert validate_payload({"a": [1, 2], "t": "é😀"}) == (
        '{"a":[1,2],"t":"é😀"}'.encode()
    )


# Payload complexity (values in all) -------------------------------------------


def test_a_payload_of_exactly_the_allowed_values_is_accepted(sync_config):
    sync_config(MAX_PAYLOAD_NODES=100)
    # The object itself, its list, and 98 values in the list.
    payload = {"a": list(range(98))}
    assert decoded(validate_payload(payload)) == payload


def test_one_value_more_is_payload_too_complex(sync_config):
    sync_config(MAX_PAYLOAD_NODES=100)
    with pytest.raises(exceptions.PayloadTooComplex) as caught:
        validate_payload({"a": list(range(99))})
    assert caught.value.code == "payload_too_complex"
    assert caught.value.status_code == 400
    assert caught.value.details == {"field": "payload", "limit": 100}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"a": [{}] * 100}, id="empty-objects"),
        pytest.param({f"k{n}": n for n in range(100)}, id="keys"),
        pytest.param({"a": [[1]] * 50}, id="nested-lists"),
        pytest.param({"a": {"b": [None] * 60, "c": [True] * 40}}, id="spread"),
    ],
)
def test_values_are_counted_at_any_depth_whatever_the_shape(sync_config, payload):
    sync_config(MAX_PAYLOAD_NODES=100)
    with pytest.raises(exceptions.PayloadTooComplex):
        validate_payload(payload)


def test_a_dict_heavy_payload_of_the_hostile_test_is_refused():
    # 65,407 bytes of empty objects: under the byte limit, 21,802 values.
    with pytest.raises(exceptions.PayloadTooComplex):
        validate_payload({"a": [{}] * 21_800}, parsed=True)


def test_values_past_the_limit_are_not_walked(sync_config):
    # Refused from the sizes of its containers alone: a million values are
    # never visited one by one (they would take about a second).
    sync_config(MAX_PAYLOAD_NODES=10_000)
    started = time.process_time()
    with pytest.raises(exceptions.PayloadTooComplex):
        validate_payload({"a": [[{}] * 1000] * 1000})
    assert time.process_time() - started < 0.25


# Topics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "ops",
        {"ops": True},
        ["ops", 1],
        [""],
        ["-ops"],
        ["a:b"],
        ["two words"],
        ["t" * 65],
        [None],
        [f"topic{n}" for n in range(65)],
    ],
)
def test_bad_topics_are_invalid_topics(value):
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        validate_topics(value)


def test_topics_accept_names_up_to_64_chars_and_collapse_duplicates():
    assert validate_topics(["ops", "t" * 64, "ops", "a.b_c-1"]) == (
        "ops",
        "t" * 64,
        "a.b_c-1",
    )


def test_missing_topics_mean_everyone():
    assert validate_topics(None) == ()
    assert validate_topics([]) == ()


def test_64_topics_are_accepted():
    topics = [f"topic{n}" for n in range(64)]
    assert validate_topics(topics) == tuple(topics)


def test_65_topics_are_refused_saying_how_many_are_allowed():
    with pytest.raises(exceptions.InvalidTopics) as caught:
        validate_topics([f"topic{n}" for n in range(65)])

    assert caught.value.message == "At most 64 topics."
    assert caught.value.details == {"field": "topics", "max": 64}


def test_topic_with_trailing_newline_is_invalid_topics():
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        validate_topics(["ops\n"])


def test_topic_list_from_a_query_string():
    assert parse_topic_list("ops, news,,ops") == ("ops", "news")
    assert parse_topic_list(" ops ,") == ("ops",)
    assert parse_topic_list("") == ()
    assert parse_topic_list(None) == ()
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        parse_topic_list("ops,a:b")
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        parse_topic_list("ops\t,news")


@settings(database=None)
@given(st.text(alphabet=" ,\tab0.-_:", max_size=30))
def test_topic_list_pattern_of_the_schema_says_what_the_parser_accepts(text):
    try:
        parse_topic_list(text)
        accepted = True
    except exceptions.InvalidTopics:
        accepted = False
    assert accepted == bool(re.fullmatch(TOPIC_LIST_PATTERN, text))


# Correlation id ---------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 1.5, True, ["id"], {"id": 1}, "c" * 129])
def test_bad_correlation_id_is_invalid_correlation_id(value):
    with rejected(exceptions.InvalidCorrelationId, "invalid_correlation_id"):
        validate_correlation_id(value)


def test_correlation_id_with_a_lone_surrogate_is_invalid_unicode():
    with pytest.raises(exceptions.InvalidUnicode) as caught:
        validate_correlation_id("req-" + LONE_SURROGATE)
    assert caught.value.code == "invalid_unicode"
    assert caught.value.details == {"field": "correlationId"}


@pytest.mark.parametrize("value", [None, "", "req-1", "c" * 128, "réq-\U0001f600"])
def test_correlation_id_null_or_short_string_is_accepted(value):
    assert validate_correlation_id(value) == value


# Whole client messages and broadcasts -----------------------------------------


@pytest.mark.parametrize("body", [None, [], ["chat"], "chat", 1, True])
@pytest.mark.parametrize("validate", [validate_client_message, validate_broadcast])
def test_body_that_is_not_an_object_is_invalid_message(validate, body):
    with rejected(exceptions.InvalidMessage, "invalid_message"):
        validate(body)


def test_client_message_with_unknown_field_is_unknown_field():
    with pytest.raises(exceptions.UnknownField) as caught:
        validate_client_message({"type": "chat", "payload": {}, "topics": ["ops"]})
    assert caught.value.code == "unknown_field"
    assert caught.value.details["field"] == "topics"


def test_broadcast_with_unknown_field_is_unknown_field():
    with rejected(exceptions.UnknownField, "unknown_field"):
        validate_broadcast({"type": "news", "correlationId": "x"})


@pytest.mark.parametrize("validate", [validate_client_message, validate_broadcast])
def test_message_without_type_is_invalid_type(validate):
    with rejected(exceptions.InvalidType, "invalid_type"):
        validate({"payload": {}})


def test_client_message_with_reserved_type_is_reserved_type():
    with rejected(exceptions.ReservedType, "reserved_type"):
        validate_client_message({"type": "data.updated", "payload": {}})


def test_client_message_with_null_payload_is_invalid_payload():
    with rejected(exceptions.InvalidPayload, "invalid_payload"):
        validate_client_message({"type": "chat", "payload": None})


def test_client_message_checks_payload_rules():
    with rejected(exceptions.ForbiddenKey, "forbidden_key"):
        validate_client_message({"type": "chat", "payload": {"__proto__": {}}})


def test_client_message_with_bad_correlation_id_is_refused():
    with rejected(exceptions.InvalidCorrelationId, "invalid_correlation_id"):
        validate_client_message({"type": "chat", "correlationId": 7})


def test_valid_client_message_is_returned_normalized():
    message = validate_client_message(
        {"type": "chat", "payload": {"text": "hi"}, "correlationId": "req-1"}
    )
    assert message.type == "chat"
    assert message.payload == {"text": "hi"}
    assert message.correlation_id == "req-1"
    assert message.topics == ()


def test_client_message_payload_defaults_to_empty_object():
    assert validate_client_message({"type": "chat"}).payload == {}


def test_broadcast_allows_reserved_types_and_topics():
    message = validate_broadcast(
        {"type": "announcement", "payload": {"text": "hi"}, "topics": ["ops", "ops"]}
    )
    assert message.type == "announcement"
    assert message.payload == {"text": "hi"}
    assert message.topics == ("ops",)


def test_broadcast_with_null_topics_is_invalid_topics():
    # The schema says array: null is not a way to say "everyone".
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        validate_broadcast({"type": "news", "topics": None})


def test_broadcast_without_topics_goes_to_everyone():
    assert validate_broadcast({"type": "news"}).topics == ()


def test_subscription_with_null_topics_is_invalid_topics():
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        validate_subscription({"type": "subscribe", "payload": {"topics": None}})


def test_broadcast_with_bad_topics_is_invalid_topics():
    with rejected(exceptions.InvalidTopics, "invalid_topics"):
        validate_broadcast({"type": "news", "topics": "ops"})


def test_broadcast_checks_payload_size(sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    with rejected(exceptions.PayloadTooLarge, "payload_too_large"):
        validate_broadcast({"type": "news", "payload": payload_of_size(101)})
