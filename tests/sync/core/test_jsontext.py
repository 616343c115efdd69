"""JSON text in (sync/core/jsontext.py): ``loads_strict`` refuses invalid Unicode
(lone surrogates) and numbers no JSON reader can hold.

A string such as "\\udc00" is valid JSON but not valid Unicode: once stored,
every later read of its queue failed to encode and answered 500. Each entry
point refuses it where it enters, tested with its module: HTTP bodies in
tests/sync/http/test_parsers.py, frames in tests/sync/ws/test_client_frames.py,
Python publishers in tests/sync/services/test_realtime.py.
"""

from __future__ import annotations

import json

import pytest

from sync.core import exceptions
from sync.core.jsontext import loads_strict
from tests.sync.texts import LONE

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
