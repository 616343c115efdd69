"""The ``SYNC_RATE_LIMIT`` on every /api/* route: a fixed-window counter.

One atomic cache increment per request (instead of DRF's sliding log, which
pickles up to `limit` timestamps per key on every request). The cache is
shared by all server processes once REDIS_URL is set.
"""

from __future__ import annotations

import math
import time

from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from sync.conf import sync_settings


class SyncRateThrottle(BaseThrottle):
    """Per user when authenticated, per client IP otherwise."""

    timer = time.time
    cache = cache
    cache_prefix = "sync:ratelimit"

    def allow_request(self, request, view) -> bool:
        rate = sync_settings.rate_limit
        now = self.timer()
        window = int(now // rate.window)
        self._retry_after = (window + 1) * rate.window - now
        key = f"{self.cache_prefix}:{self.identity(request)}:{rate.window}:{window}"
        # add() only creates the counter; incr() is atomic in every backend.
        self.cache.add(key, 0, timeout=rate.window + 1)
        try:
            count = self.cache.incr(key)
        except ValueError:  # expired between add() and incr()
            self.cache.add(key, 1, timeout=rate.window + 1)
            count = 1
        return count <= rate.limit

    def wait(self) -> float:
        """Seconds until the current window ends (the Retry-After value)."""
        return max(1, math.ceil(self._retry_after))

    def identity(self, request) -> str:
        """`user:<pk>` for authenticated callers, `ip:<address>` otherwise."""
        user = request.user
        if user.is_authenticated:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"
