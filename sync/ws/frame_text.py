"""Frames as text on the wire: ours out, the client's read back leniently."""

from __future__ import annotations

import json
from typing import Any

from sync.core.exceptions import SyncError
from sync.core.jsontext import loads_strict


def encode_frame(frame: dict[str, Any]) -> str:
    """Compact ASCII JSON (the outbox counts characters as bytes)."""
    return json.dumps(frame, separators=(",", ":"))


# A frame dropped unread (over a rate) is parsed for its correlation only
# when this short: a flood of big frames costs no parsing at all.
MAX_PARSED_FOR_CORRELATION = 1024


def parse_leniently(text: str | None) -> Any:
    """A dropped frame as JSON if it is short and parses, else None (only to
    find its id, for the answer's correlation)."""
    if text is None or len(text) > MAX_PARSED_FOR_CORRELATION:
        return None
    try:
        return loads_strict(text)
    except SyncError:
        return None
