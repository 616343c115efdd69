"""Strict JSON bodies: size-capped, NaN-free, valid Unicode, with our error codes."""

from __future__ import annotations

from rest_framework.parsers import JSONParser

from sync.core.exceptions import PayloadTooLarge
from sync.core.jsontext import loads_strict
from sync.core.validation import max_body_bytes


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
