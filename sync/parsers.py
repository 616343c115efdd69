"""Strict JSON bodies: size-capped, NaN-free, with our error codes."""

from __future__ import annotations

import json

from rest_framework.parsers import JSONParser

from sync.conf import sync_settings
from sync.exceptions import InvalidJSON, PayloadTooLarge

# Room for the envelope around a maximal payload (type, ids, topics).
BODY_OVERHEAD_BYTES = 4096


def max_body_bytes() -> int:
    """Largest request body or WebSocket frame accepted."""
    return sync_settings.MAX_PAYLOAD_BYTES + BODY_OVERHEAD_BYTES


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: bytes | str) -> object:
    """Parse JSON, refusing NaN/Infinity and absurd nesting with InvalidJSON."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJSON("The JSON nests too deeply.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidJSON(f"The body is not valid JSON: {error}") from None


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
