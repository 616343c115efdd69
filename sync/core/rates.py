"""Rate strings such as ``1000/15m``: how many events per window.

Kept free of Django imports so settings can validate rates at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    """`limit` events allowed in each window of `window` seconds."""

    limit: int
    window: int


@lru_cache(maxsize=32)
def parse_rate(text: str) -> Rate:
    """Parse ``N/<n><s|m|h|d>`` (``100/10s``, ``1000/15m``, ``60/m``)."""
    match = RATE_PATTERN.fullmatch(text or "")
    if not match:
        raise ValueError(
            f"Invalid rate {text!r}: expected N/<n><s|m|h|d>, e.g. 1000/15m."
        )
    limit, count, unit = int(match[1]), int(match[2] or 1), match[3]
    if limit < 1 or count < 1:
        raise ValueError(f"Invalid rate {text!r}: both numbers must be positive.")
    return Rate(limit=limit, window=count * UNIT_SECONDS[unit])
