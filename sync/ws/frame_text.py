"""Frames as text on the wire: ours out, the client's read back leniently."""

from __future__ import annotations

import json
from typing import Any

from sync.core.exceptions import SyncError
from sync.core.jsontext import loads_strict


def encode_frame(frame: dict[str, Any]) -> str:
    """Compact ASCII JSON (the outbox counts characters as bytes)."""
    return json.dumps(frame, separators=(",", ":"))


def parse_leniently(text: str | None) -> Any:
    """The frame as JSON if it parses, else None (only to find its id)."""
    try:
        return loads_strict(text) if text is not None else None
    except SyncError:
        return None
