"""Server time as the wire carries it."""

import time


def now_ms() -> int:
    """Server time in milliseconds since the Unix epoch."""
    return int(time.time() * 1000)
