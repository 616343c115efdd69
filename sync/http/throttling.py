"""The ``SYNC_RATE_LIMIT`` on every /api/* route: a fixed-window counter.

One counter increment per request (instead of DRF's sliding log, which
pickles up to `limit` timestamps per key on every request): in this
process's counter table, or in Redis, shared by all server processes, once
REDIS_URL is set (see ``sync.services.ratelimit``). Anonymous IPv6 callers are
counted by their /64 (``sync.core.client_address``).
"""

from __future__ import annotations

import time

from rest_framework.throttling import BaseThrottle

from sync.core.client_address import address_key, request_address
from sync.core.conf import sync_settings
from sync.core.rates import Rate
from sync.services.ratelimit import Hit, ahit_shared, hit_shared


class SyncRateThrottle(BaseThrottle):
    """Per user when authenticated, per client IP otherwise."""

    timer = time.time

    def allow_request(self, request, view) -> bool:
        rate = sync_settings.rate_limit
        hit = hit_shared(self.identity(request), rate, now=self.timer())
        return self.judge(hit, rate)

    async def aallow_request(self, request, view) -> bool:
        """Async twin of allow_request (see ``ratelimit.ahit_shared``)."""
        rate = sync_settings.rate_limit
        hit = await ahit_shared(self.identity(request), rate, now=self.timer())
        return self.judge(hit, rate)

    def judge(self, hit: Hit, rate: Rate) -> bool:
        """Remember when the window ends; True while within the limit."""
        self.retry_after = hit.retry_after
        return not hit.over(rate)

    def wait(self) -> float:
        """Seconds until the current window ends (the Retry-After value)."""
        return self.retry_after

    def identity(self, request) -> str:
        """`user:<pk>` for authenticated callers, `ip:<address>` otherwise."""
        user = request.user
        if user.is_authenticated:
            return f"user:{user.pk}"
        return f"ip:{address_key(request_address(request))}"
