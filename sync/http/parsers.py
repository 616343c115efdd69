"""Strict JSON bodies: size-capped, NaN-free, valid Unicode, with our error codes."""

from __future__ import annotations

from rest_framework.parsers import JSONParser

from sync.core.conf import sync_settings
from sync.core.exceptions import PayloadTooLarge
from sync.core.jsontext import check_unicode, loads_strict

__all__ = ["StrictJSONParser", "check_unicode", "loads_strict", "max_body_bytes"]

# Room for the envelope around a maximal payload (type, ids, topics).
BODY_OVERHEAD_BYTES = 4096


def max_body_bytes() -> int:
    """Largest request body or WebSocket frame accepted."""
    return sync_settings.MAX_PAYLOAD_BYTES + BODY_OVERHEAD_BYTES


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
