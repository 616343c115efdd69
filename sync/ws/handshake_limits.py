"""WebSocket handshakes per client address and per user (README, Security).

Two ASGI middlewares, one on each side of authentication:

- ``AddressGate``, before it: each handshake is counted against its address
  (``SYNC_WS_ANONYMOUS_CONNECT_RATE``) before its token or session is looked
  up, and refused past the rate, so a flood of random tokens costs no
  database query, however many arrive at once. A token this process already
  trusts (in its token cache) passes without counting: a known user behind
  an address others exhausted is not locked out.
- ``HandshakeLimit``, after it: a handshake that authenticated gives its
  address count back (only failed attempts stay counted there) and is
  counted against its user (``SYNC_WS_CONNECT_RATE``); past it, refused.

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
from sync.services.ratelimit import agive_back_shared, ahit_shared
from sync.services.token_cache import token_cache
from sync.ws.middleware import presented_token

logger = logging.getLogger(__name__)

HTTP_RESPONSE_EXTENSION = "websocket.http.response"
# Counter scopes (see sync.services.ratelimit): failed handshakes, handshakes per user.
ANONYMOUS_SCOPE = "ws-anonymous"
USER_SCOPE = "ws-connect"


# Set in the scope when the address gate counted the handshake.
ADDRESS_COUNTED = "sync.address_counted"


class AddressGate:
    """Count each handshake against its address first; refuse past the rate."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if _trusted_token(scope):
            return await self.app(scope, receive, send)
        rate = sync_settings.ws_anonymous_connect_rate
        identity = _address_identity(scope)
        with contextlib.suppress(StoreUnavailable):
            hit = await ahit_shared(identity, rate, scope=ANONYMOUS_SCOPE)
            if hit.over(rate):
                return await refuse(scope, receive, send, hit, rate, "anonymous")
            scope[ADDRESS_COUNTED] = True
        return await self.app(scope, receive, send)


class HandshakeLimit:
    """Count each authenticated handshake against its user, and give its
    address count back; a failed one stays counted against its address."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.app(scope, receive, send)
        rate = sync_settings.ws_connect_rate
        with contextlib.suppress(StoreUnavailable):
            if scope.pop(ADDRESS_COUNTED, False):
                anonymous = sync_settings.ws_anonymous_connect_rate
                identity = _address_identity(scope)
                await agive_back_shared(identity, anonymous, scope=ANONYMOUS_SCOPE)
            hit = await ahit_shared(f"user:{user.pk}", rate, scope=USER_SCOPE)
            if hit.over(rate):
                return await refuse(scope, receive, send, hit, rate, "user")
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
        await send({"type": "websocket.close", "code": int(CloseCode.THROTTLED)})


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


def _trusted_token(scope) -> bool:
    """True if the handshake presents a token this process already trusts."""
    key = presented_token(scope)
    return bool(key) and token_cache().get(key) is not None
