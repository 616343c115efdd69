"""Strict JSON bodies: size-capped, NaN-free, valid Unicode, with our error codes."""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework.parsers import JSONParser

from sync.conf import sync_settings
from sync.exceptions import InvalidJSON, InvalidUnicode, PayloadTooLarge
from sync.validation import is_valid_unicode

# Room for the envelope around a maximal payload (type, ids, topics).
BODY_OVERHEAD_BYTES = 4096

# A lone surrogate reaches a parsed string only through a `\ud800`-`\udfff`
# escape (or, from Python callers, as a raw character): strictly decoded bytes
# cannot hold one. Texts without either are never walked, which keeps the
# check off the hot path.
SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def max_body_bytes() -> int:
    """Largest request body or WebSocket frame accepted."""
    return sync_settings.MAX_PAYLOAD_BYTES + BODY_OVERHEAD_BYTES


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: bytes | str) -> object:
    """Parse JSON, refusing NaN/Infinity, absurd nesting and invalid Unicode.

    Raises InvalidJSON or InvalidUnicode: a lone surrogate stored in a message
    would make every later read of its queue fail to encode.
    """
    text = _decode(raw) if isinstance(raw, bytes | bytearray) else raw
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJSON("The JSON nests too deeply.") from None
    except ValueError as error:
        raise InvalidJSON(f"The body is not valid JSON: {error}") from None
    if SURROGATE_HINT.search(text):
        check_unicode(value)
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
    """Walk `value` without recursion; True at the first invalid string."""
    pending = [value]
    while pending:
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


class StrictJSONParser(JSONParser):
    """Reads at most max_body_bytes() and parses it with loads_strict()."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = max_body_bytes()
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"The body is over {limit} bytes.", details={"limit": limit}
            )
        return loads_strict(raw)
