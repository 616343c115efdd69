"""Shapes from SPEC.md that tests check responses against, stated once."""

# SPEC §2: every message a client receives.
MESSAGE_KEYS = frozenset(
    {
        "id",
        "type",
        "payload",
        "timestamp",
        "userId",
        "topics",
        "cursor",
        "correlationId",
    }
)
# SPEC §4: GET /api/sync/poll.
POLL_KEYS = frozenset(
    {"success", "messages", "timestamp", "count", "cursor", "hasMore", "gap"}
)
