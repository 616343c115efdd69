"""Query parameters of GET /api/sync/poll, parsed and checked."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from sync.core import exceptions
from sync.core.clock import now_ms
from sync.core.conf import sync_settings
from sync.core.validation import parse_topic_list
from sync.services.polling import PollQuery
from sync.store.cursors import decode_cursor

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
INTEGER = re.compile(r"^\d{1,18}$")
# How far ahead of the server's clock a `since` may be: room for clients whose
# clocks run fast, while a value from nowhere (10^18) is refused, not served.
MAX_SINCE_AHEAD_MS = 60_000


def parse_poll_query(params: Mapping[str, str]) -> PollQuery:
    """Read since, cursor, topics, limit and wait, or raise a 400 error."""
    cursor_text = params.get("cursor")
    cursor = decode_cursor(cursor_text) if cursor_text else None
    since = parse_since(params.get("since"))
    if cursor is None:
        # Only a `since` that is read must be plausible; a cursor wins over it.
        check_since_not_ahead(since)
    return PollQuery(
        since=since,
        cursor=cursor,
        topics=parse_topic_list(params.get("topics")),
        limit=parse_limit(params.get("limit")),
        wait=parse_wait(params.get("wait")),
    )


def parse_since(text: str | None) -> int | None:
    """Milliseconds since the epoch, a non-negative integer."""
    if text is None or text == "":
        return None
    if not INTEGER.fullmatch(text):
        raise exceptions.InvalidSince(details={"field": "since"})
    return int(text)


def check_since_not_ahead(since: int | None) -> None:
    """Refuse a `since` more than a minute ahead of the server's clock."""
    if since is not None and since > now_ms() + MAX_SINCE_AHEAD_MS:
        raise exceptions.InvalidSince(
            "since is ahead of the server's clock.",
            details={"field": "since", "maxAheadMs": MAX_SINCE_AHEAD_MS},
        )


def parse_limit(text: str | None) -> int:
    """Page size from 1 to 1000; 100 when absent."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not INTEGER.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise exceptions.InvalidLimit(details={"field": "limit", "max": MAX_LIMIT})
    return int(text)


def parse_wait(text: str | None) -> float:
    """Seconds to hold the poll open, capped at SYNC_POLL_MAX_WAIT."""
    if text is None or text == "":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise exceptions.InvalidWait(details={"field": "wait"}) from None
    if not math.isfinite(value) or value < 0:
        raise exceptions.InvalidWait(details={"field": "wait"})
    return min(value, float(sync_settings.POLL_MAX_WAIT))
