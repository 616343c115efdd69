"""WebSocket handshakes per client address and per user (README, Security).

Two ASGI middlewares, one on each side of authentication:

- ``AddressGate``, before it: an address that has used up
  ``SYNC_WS_ANONYMOUS_CONNECT_RATE`` (handshakes that failed to
  authenticate) is refused before its token or session is looked up, so a
  flood of random tokens costs no database query.
- ``HandshakeLimit``, after it: a handshake that failed to authenticate is
  counted against its address, one that succeeded against its user
  (``SYNC_WS_CONNECT_RATE``); past either rate it is refused.

A refusal is an HTTP 429 where the ASGI server lets the application answer a
handshake with a status (the ``websocket.http.response`` extension: uvicorn),
else the socket is accepted and closed at once with 4429 (daphne). It is
logged once per address or user and window: a flood is not a log flood. The
counters are those of ``sync.services.ratelimit``: in Redis, shared by every
instance, when it is configured (a round trip per handshake). While that
Redis is out of reach handshakes go uncounted rather than fail: the consumer
then meets the outage itself and says so (``store_unavailable``, 1011).
"""

from __future__ import annotations

import contextlib
import json
import logging

from sync.core.client_address import address_key, scope_address
from sync.core.conf import sync_settings
from sync.core.exceptions import StoreUnavailable
from sync.core.protocol import CloseCode
from sync.core.rates import Rate
from sync.services.counter_table import Hit
from sync.services.ratelimit import ahit_shared, apeek_shared

logger = logging.getLogger(__name__)

HTTP_RESPONSE_EXTENSION = "websocket.http.response"
# Counter scopes (see sync.services.ratelimit): failed handshakes, handshakes per user.
ANONYMOUS_SCOPE = "ws-anonymous"
USER_SCOPE = "ws-connect"


class AddressGate:
    """Refuse handshakes from an address out of failed attempts, unread."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        rate = sync_settings.ws_anonymous_connect_rate
        identity = _address_identity(scope)
        with contextlib.suppress(StoreUnavailable):
            seen = await apeek_shared(identity, rate, scope=ANONYMOUS_SCOPE)
            if seen.used_up(rate):
                hit = await ahit_shared(identity, rate, scope=ANONYMOUS_SCOPE)
                return await refuse(scope, receive, send, hit, rate, "anonymous")
        return await self.app(scope, receive, send)


class HandshakeLimit:
    """Count each handshake against its user, or its address if it failed."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is not None and user.is_authenticated:
            rate = sync_settings.ws_connect_rate
            identity, counters, reason = f"user:{user.pk}", USER_SCOPE, "user"
        else:
            rate = sync_settings.ws_anonymous_connect_rate
            identity, counters = _address_identity(scope), ANONYMOUS_SCOPE
            reason = "anonymous"
        with contextlib.suppress(StoreUnavailable):
            hit = await ahit_shared(identity, rate, scope=counters)
            if hit.over(rate):
                return await refuse(scope, receive, send, hit, rate, reason)
        return await self.app(scope, receive, send)


async def refuse(scope, receive, send, hit: Hit, rate: Rate, reason: str) -> None:
    """Answer the handshake with 429 (or accept, then close 4429)."""
    if hit.count == rate.limit + 1:  # the first refusal of this window
        user = scope.get("user")
        logger.info(
            "websocket refused",
            extra={
                "code": CloseCode.THROTTLED,
                "reason": f"handshake_rate_{reason}",
                "user_id": getattr(user, "pk", None) if reason == "user" else None,
                "client": address_key(scope_address(scope)),
                "retry_after": hit.retry_after,
            },
        )
    if (await receive())["type"] != "websocket.connect":
        return  # the client is gone already
    if HTTP_RESPONSE_EXTENSION in (scope.get("extensions") or {}):
        await _answer_429(send, hit.retry_after)
    else:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": CloseCode.THROTTLED})


async def _answer_429(send, retry_after: int) -> None:
    body = {
        "success": False,
        "error": {
            "code": "throttled",
            "message": "Too many connection attempts; retry later.",
            "details": {"retryAfter": retry_after},
        },
    }
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send(
        {"type": "websocket.http.response.body", "body": json.dumps(body).encode()}
    )


def _address_identity(scope) -> str:
    return f"ip:{address_key(scope_address(scope))}"
