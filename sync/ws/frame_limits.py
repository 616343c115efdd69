"""What one client frame may cost: its size, and frames per socket and per user.

A frame longer than ``SYNC_MAX_PAYLOAD_BYTES`` + 4096 closes its socket
(1009).

``SYNC_WS_RATE_LIMIT`` counts one socket's frames; ``SYNC_WS_USER_RATE_LIMIT``
counts a user's frames across all of its sockets, so closing and reopening
sockets gains nothing. Beyond either limit a frame is dropped (the client
gets a ``throttled`` error frame); at twice either limit within one window
the socket that sends is closed with 4429.

The per-user counters live in this process, like the per-user socket cap:
frames are counted on the event loop at the rate they arrive, where a round
trip to Redis per frame would cost more than the frame. With N instances a
user may send up to N times the limit (README, Redis deployment).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from sync.core.conf import sync_settings
from sync.core.validation import max_body_bytes
from sync.services.ratelimit import counter_table


class FrameVerdict(enum.Enum):
    """What to do with one client frame."""

    ACCEPT = "accept"
    DROP = "drop"
    DROP_FIRST = "drop_first"  # the first dropped in its window: log it
    CLOSE = "close"


# The counter scope (see sync.services.ratelimit); always this process's table.
FRAMES_SCOPE = "ws-frames"
# Windows of the per-user counters follow this clock (tests set it).
clock: Callable[[], float] = time.monotonic


def judge_frame(socket_count: int, user_id: object) -> FrameVerdict:
    """Count a frame against its user; the verdict for both counts."""
    socket_limit = sync_settings.ws_rate_limit.limit
    user_rate = sync_settings.ws_user_rate_limit
    frames = counter_table(FRAMES_SCOPE)
    user_count = frames.hit(str(user_id), user_rate, clock()).count
    if socket_count >= 2 * socket_limit or user_count >= 2 * user_rate.limit:
        return FrameVerdict.CLOSE
    if socket_count > socket_limit or user_count > user_rate.limit:
        first = socket_count == socket_limit + 1 or user_count == user_rate.limit + 1
        return FrameVerdict.DROP_FIRST if first else FrameVerdict.DROP
    return FrameVerdict.ACCEPT


def frame_too_big(raw: str | bytes | None) -> bool:
    """Over max_body_bytes() in UTF-8, encoding only when length can't tell."""
    if raw is None:
        return False
    limit = max_body_bytes()
    if isinstance(raw, bytes) or len(raw) > limit:
        return len(raw) > limit
    # A character takes 1 to 4 bytes: most frames are decided without encoding.
    return len(raw) * 4 > limit and len(raw.encode()) > limit
