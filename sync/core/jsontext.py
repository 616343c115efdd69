"""JSON text in and out: strict parsing, compact encoding, one library.

orjson parses and encodes in C, several times faster than the standard
library on the dict-heavy payloads a client may send, and already refuses
what the contract refuses: NaN and Infinity, invalid UTF-8, lone surrogate
escapes. Its errors are terse, so a refused text is parsed once more by the
standard library to say precisely what is wrong (only refusals pay for it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from sync.core.conf import sync_settings
from sync.core.exceptions import (
    InvalidJSON,
    InvalidPayload,
    InvalidUnicode,
    PayloadTooComplex,
)

# Python values orjson would write in a form of its own (RFC 3339 dates,
# dataclass fields) are refused like any other non-JSON value.
ENCODE_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
# orjson reads an integer past 64 bits as a float, silently changing it: a
# text with a run of 20 digits (which may hold one) is read by the standard
# library instead, which keeps it whole, and encoding then refuses it.
LONG_NUMBER_HINT = re.compile(rb"[0-9]{20}")
LONG_NUMBER_HINT_TEXT = re.compile(r"[0-9]{20}")
# A lone surrogate is named by its field when the text is this short; in a
# longer one, finding the field would cost a walk of every string.
EXPLAINED_SURROGATE_BYTES = 8192
# A lone surrogate reaches a parsed string only through a `\ud800`-`\udfff`
# escape (or, from Python callers, as a raw character): strictly decoded
# bytes cannot hold one.
SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def loads_strict(raw: bytes | bytearray | str) -> Any:
    """Parse JSON, refusing NaN/Infinity, absurd nesting and invalid Unicode.

    Raises InvalidJSON or InvalidUnicode: a lone surrogate stored in a message
    would make every later read of its queue fail to encode.
    """
    hint = LONG_NUMBER_HINT_TEXT if isinstance(raw, str) else LONG_NUMBER_HINT
    if hint.search(raw):
        return _loads_explained(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "surrogate in string" in str(error) and len(raw) > EXPLAINED_SURROGATE_BYTES:
            # Found already; naming its field would cost a walk of it all.
            raise InvalidUnicode(
                "The body holds a string that is not valid Unicode."
            ) from None
        return _loads_explained(raw)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of a value known to be JSON (our own frames)."""
    return orjson.dumps(value, option=ENCODE_OPTIONS)


def encode_value(value: Any) -> bytes:
    """Compact UTF-8 JSON of a caller's value, or InvalidPayload/InvalidUnicode."""
    try:
        return orjson.dumps(value, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError as error:
        if "surrogates" in str(error):
            raise InvalidUnicode(
                "Payload holds a string that is not valid Unicode.",
                details={"field": "payload"},
            ) from None
        raise InvalidPayload(
            "Payload must contain only JSON values (no NaN or Infinity, no "
            "integer beyond 64 bits).",
            details={"field": "payload"},
        ) from None


def _loads_explained(raw: bytes | bytearray | str) -> Any:
    """The standard library's reading of a text orjson refused.

    It names the field holding a lone surrogate, and it still reads what
    orjson does not: JSON in UTF-16 or UTF-32, and nesting past orjson's
    1024 levels (which the payload rules then refuse as too deep).
    """
    text = _decode(raw) if isinstance(raw, bytes | bytearray) else raw
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError:
        raise InvalidJSON("The JSON nests too deeply.") from None
    except ValueError as error:
        raise InvalidJSON(f"The body is not valid JSON: {error}") from None
    if SURROGATE_HINT.search(text):
        check_unicode(value)
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing one too large for any (1e400)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _decode(raw: bytes | bytearray) -> str:
    """Decode strictly: json.loads(bytes) would let encoded surrogates through."""
    try:
        return raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError:
        raise InvalidUnicode("The body is not valid UTF-8.") from None


def check_unicode(value: Any) -> None:
    """Raise InvalidUnicode if any string or key in `value` is not valid Unicode."""
    if isinstance(value, dict):
        for key, child in value.items():
            _check_field(key, child)
    elif _holds_lone_surrogate(value):
        raise InvalidUnicode()


def _check_field(name: str, value: Any) -> None:
    """Name the top-level field at fault when that name is itself printable."""
    if _holds_lone_surrogate(name):
        raise InvalidUnicode("A field name is not valid Unicode.")
    if _holds_lone_surrogate(value):
        raise InvalidUnicode(
            f"Field {name!r} holds a string that is not valid Unicode.",
            details={"field": name},
        )


def _holds_lone_surrogate(value: Any) -> bool:
    """Walk `value` without recursion; True at the first invalid string.

    Keys and values both count as steps; past twice ``MAX_PAYLOAD_NODES``
    (and a margin for the envelope's fields) the text holds more values
    than any payload may, and is refused as too complex.
    """
    steps = 2 * sync_settings.MAX_PAYLOAD_NODES + 64
    pending = [value]
    while pending:
        steps -= 1
        if steps < 0:
            raise PayloadTooComplex(
                "The body holds more values than any payload may.",
                details={"limit": sync_settings.MAX_PAYLOAD_NODES},
            )
        node = pending.pop()
        if isinstance(node, str):
            if not is_valid_unicode(node):
                return True
        elif isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def is_valid_unicode(text: str) -> bool:
    """False when `text` holds a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
