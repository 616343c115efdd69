"""Invalid Unicode (lone surrogates) is refused on every path (SPEC §2).

A string such as "\\udc00" is valid JSON but not valid Unicode: once stored,
every later read of its queue failed to encode and answered 500. It must be
refused where it enters (HTTP bodies, WebSocket frames, the token endpoint,
Python publishers), with the error envelope, and leave polling working.
"""

from __future__ import annotations

import json
import logging

import pytest

from sync.core import exceptions
from sync.core.jsontext import loads_strict
from sync.models import Broadcast
from sync.services import get_realtime_sync
from tests.sync.test_views import (
    BROADCAST,
    SEND,
    TOKEN,
    assert_error,
    poll,
)

# JSON text (not Python) escapes: what a hostile client puts on the wire.
LONE = "\\udc00"


def post_raw(client, path: str, text: str):
    return client.post(path, text, content_type="application/json")


# The parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f'"{LONE}"', id="bare-string"),
        pytest.param(f'{{"a": "x{LONE}y"}}', id="value"),
        pytest.param(f'{{"{LONE}": 1}}', id="key"),
        pytest.param(f'{{"a": [1, {{"b": ["{LONE}"]}}]}}', id="nested"),
        pytest.param('{"a": "\\uD800"}', id="upper-case-high"),
        pytest.param('{"a": "\\ude00\\ud83d"}', id="pair-in-wrong-order"),
        pytest.param('{"a": "\\ud83d"}', id="high-without-low"),
    ],
)
def test_loads_strict_refuses_lone_surrogates(text):
    for raw in (text, text.encode()):
        with pytest.raises(exceptions.InvalidUnicode) as caught:
            loads_strict(raw)
        assert caught.value.code == "invalid_unicode"


def test_loads_strict_refuses_surrogates_encoded_in_utf8_bytes():
    # json.loads(bytes) would decode these with "surrogatepass".
    with pytest.raises(exceptions.InvalidUnicode):
        loads_strict(b'{"a": "\xed\xb0\x80"}')


def test_loads_strict_refuses_bytes_that_are_not_utf8():
    with pytest.raises(exceptions.InvalidUnicode):
        loads_strict(b'{"a": "\xff"}')


def test_loads_strict_refuses_a_raw_surrogate_in_a_python_string():
    with pytest.raises(exceptions.InvalidUnicode):
        loads_strict('{"a": "\udc00"}')


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}, id="pair"),
        pytest.param('{"a": "\\\\udc00"}', {"a": "\\udc00"}, id="escaped-backslash"),
        pytest.param('{"a": "é€😀"}', {"a": "é€😀"}, id="raw-utf8"),
        pytest.param('{"a": "\\u00e9\\uFFFD"}', {"a": "é\ufffd"}, id="bmp-escapes"),
    ],
)
def test_loads_strict_accepts_valid_unicode(text, value):
    assert loads_strict(text) == value
    assert loads_strict(text.encode()) == value


def test_loads_strict_names_the_field_at_fault():
    with pytest.raises(exceptions.InvalidUnicode) as caught:
        loads_strict(f'{{"type": "chat", "payload": {{"t": "{LONE}"}}}}')
    assert caught.value.details == {"field": "payload"}


# HTTP bodies --------------------------------------------------------------------

SEND_BODIES = [
    pytest.param(f'{{"type": "chat", "payload": {{"t": "{LONE}"}}}}', id="payload"),
    pytest.param(f'{{"type": "chat", "payload": {{"{LONE}": 1}}}}', id="payload-key"),
    pytest.param(f'{{"type": "chat", "correlationId": "{LONE}"}}', id="correlationId"),
    pytest.param(f'{{"type": "chat", "{LONE}": 1}}', id="unknown-field-name"),
]


@pytest.mark.parametrize("text", SEND_BODIES)
def test_send_with_a_lone_surrogate_is_400_and_stores_nothing(api_client, text):
    assert_error(post_raw(api_client, SEND, text), 400, "invalid_unicode")
    assert poll(api_client)["messages"] == []


def test_broadcast_with_a_lone_surrogate_is_400_and_reaches_no_one(
    staff_client, api_client
):
    text = f'{{"type": "announcement", "payload": {{"t": "{LONE}"}}}}'
    assert_error(post_raw(staff_client, BROADCAST, text), 400, "invalid_unicode")
    assert not Broadcast.objects.exists()
    assert poll(api_client)["messages"] == []
    assert poll(staff_client)["messages"] == []


def test_send_with_surrogate_pair_is_stored_and_read_back(api_client):
    text = '{"type": "chat", "payload": {"t": "\\ud83d\\ude00"}}'
    assert post_raw(api_client, SEND, text).status_code == 201
    assert [m["payload"] for m in poll(api_client)["messages"]] == [{"t": "😀"}]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f'{{"username": "{LONE}", "password": "x"}}', id="value"),
        pytest.param(f'{{"username": "a", "password": "x", "{LONE}": 1}}', id="key"),
    ],
)
def test_token_body_with_a_lone_surrogate_is_400_without_a_traceback(
    anon_client, text, caplog
):
    with caplog.at_level(logging.ERROR):
        response = post_raw(anon_client, TOKEN, text)
    assert_error(response, 400, "invalid_unicode")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# Python publishers ---------------------------------------------------------------


def test_python_publish_with_a_lone_surrogate_is_refused(api_client, user):
    with pytest.raises(exceptions.InvalidUnicode):
        get_realtime_sync().publish("data.updated", {"t": "\udc00"}, user.pk)
    with pytest.raises(exceptions.InvalidUnicode):
        get_realtime_sync().broadcast("announcement", {"\udc00": 1})
    assert poll(api_client)["messages"] == []


# WebSocket frames ---------------------------------------------------------------


async def test_frame_with_a_lone_surrogate_gets_an_error_frame_and_stays_open(
    ws_connect, user
):
    ws, _ = await ws_connect(user)
    await ws.send_to(text_data=f'{{"type": "chat", "id": "f1", "payload": "{LONE}"}}')
    error = await ws.receive_json_from(1)
    assert error["type"] == "error"
    assert error["payload"]["code"] == "invalid_unicode"
    await ws.send_to(text_data=json.dumps({"type": "ping", "id": "after"}))
    pong = await ws.receive_json_from(1)
    assert pong["type"] == "pong"
    assert pong["correlationId"] == "after"
    assert await ws.receive_nothing(0.1)


# Numbers no JSON reader can hold (parsed by loads_strict) ------------------------


@pytest.mark.parametrize("text", ['{"a": 1e400}', '{"a": -1e400}', '{"a": [1E999]}'])
def test_loads_strict_refuses_a_number_too_large_for_a_float(text):
    # Read as Infinity it would be stored as null: refused instead.
    for raw in (text, text.encode()):
        with pytest.raises(exceptions.InvalidJSON):
            loads_strict(raw)


def test_an_integer_beyond_64_bits_is_refused_never_rounded():
    from sync.core.validation import validate_payload

    value = loads_strict('{"id": 123456789012345678901234567890}')
    assert value == {"id": 123456789012345678901234567890}  # read whole
    with pytest.raises(exceptions.InvalidPayload):
        validate_payload(value, parsed=True)


def test_integers_within_64_bits_and_long_digit_strings_are_kept_exactly():
    from sync.core.validation import validate_payload

    text = (
        '{"max": 18446744073709551615, "min": -9223372036854775808,'
        ' "s": "1234567890123456789012345"}'
    )
    value = loads_strict(text)
    assert value["max"] == 2**64 - 1
    assert json.loads(validate_payload(value, parsed=True)) == value


def test_a_long_text_with_a_lone_surrogate_is_refused_without_walking_it(
    monkeypatch,
):
    # Naming the field at fault walks every string: for a 80 kB frame of
    # 11,600 objects that cost 13 ms a frame (hostile test); a long text is
    # refused without it.
    from sync.core import jsontext

    def walked(value):
        raise AssertionError("the whole text was walked")

    monkeypatch.setattr(jsontext, "check_unicode", walked)
    frame = (
        '{"payload": {"a": [' + ",".join(['{"": 0}'] * 11_600) + "]},"
        f' "type": "x", "correlationId": "{LONE}"}}'
    )
    with pytest.raises(exceptions.InvalidUnicode):
        loads_strict(frame)


def test_walking_a_text_for_its_surrogate_stops_past_any_payloads_size(
    sync_config,
):
    # UTF-16 text goes through the standard library and the walk: it is
    # bounded by the payload's value limit (twice it, keys and values).
    sync_config(MAX_PAYLOAD_NODES=100)
    values = ",".join(['{"k": "v"}'] * 500)
    text = f'{{"a": [{values}], "z": "{LONE}"}}'  # walked in field order
    with pytest.raises(exceptions.PayloadTooComplex):
        loads_strict(text.encode("utf-16"))
