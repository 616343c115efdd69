"""What a client asks for on the connect URL: ``cursor`` and ``topics``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync.core.validation import parse_topic_list
from sync.store.cursors import Position, decode_cursor
from sync.ws.middleware import query_param


@dataclass(frozen=True)
class ConnectParams:
    """Where to resume (None: from now) and the topics followed at once."""

    cursor: Position | None
    topics: tuple[str, ...]

    @classmethod
    def of(cls, scope: dict[str, Any]) -> ConnectParams:
        """Read them from the handshake's query string, or raise a 4400 error."""
        cursor_text = query_param(scope, "cursor")
        return cls(
            cursor=decode_cursor(cursor_text) if cursor_text else None,
            topics=parse_topic_list(query_param(scope, "topics")),
        )
