"""ASGI middleware for the WebSocket endpoint.

- WebsocketSwitch: ``SYNC_WEBSOCKET_ENABLED=false`` refuses every handshake.
- OriginCheck: a present Origin must be this site (scheme, port and an allowed
  host) or a trusted origin (``sync.core.origins``); a missing one is admitted (only
  browsers send it; other clients authenticate by token). Channels'
  AllowedHostsOriginValidator refuses a missing Origin and ignores the port.
- TokenAuthMiddleware: ``Authorization: Token <key>`` or ``?token=<key>``,
  else the session cookie.

Settings are read per connection, so tests and reloads see current values.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.contrib.auth.models import AnonymousUser

from sync.core.conf import sync_settings
from sync.core.origins import header, websocket_origin_allowed
from sync.services.revocation import ensure_revocations_heard
from sync.services.token_cache import token_cache

TOKEN_KEYWORD = "token"
# Enough of a refused Origin to recognise it; a header may be long.
LOGGED_ORIGIN_CHARS = 200

logger = logging.getLogger(__name__)


def query_param(scope, name: str) -> str | None:
    """The first value of a query-string parameter, or None."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


class WebsocketSwitch:
    """Refuse every WebSocket handshake (403) when WebSocket is disabled."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if not sync_settings.WEBSOCKET_ENABLED:
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class OriginCheck:
    """Refuse (403) a handshake whose Origin is neither this site nor trusted.

    Browsers send cookies with a cross-site WebSocket handshake, so without
    this check any page could act as a logged-in user.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = header(scope, "origin")
        if origin is not None and not websocket_origin_allowed(origin, scope):
            logger.info(
                "websocket refused",
                extra={
                    "code": 403,
                    "reason": "origin",
                    "origin": origin[:LOGGED_ORIGIN_CHARS],
                },
            )
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class TokenAuthMiddleware:
    """Authenticate by a DRF token when one is presented; else by the session.

    A presented token decides, as on the HTTP API where token authentication
    comes first: a bad token is not rescued by a session cookie, and a token
    socket skips the session machinery altogether (less memory per socket).
    The header wins over ``?token=``, which can land in access logs and
    browser history. The key that authenticated is kept as
    ``scope["auth_token"]`` (None for a session) so that deleting that token
    closes this socket.
    """

    def __init__(self, app, session_app) -> None:
        self.app = app
        self.session_app = session_app

    async def __call__(self, scope, receive, send):
        # The scope is extended in place, not copied: nothing upstream reads
        # it again, and a copy per socket is memory an idle socket keeps.
        key = presented_token(scope)
        if key is None:
            scope["auth_token"] = None
            return await self.session_app(scope, receive, send)
        user = await user_for_token(key)
        scope["user"] = user
        scope["auth_token"] = key if user.is_authenticated else None
        return await self.app(scope, receive, send)


def presented_token(scope) -> str | None:
    """The token key from the Authorization header or ``?token=``, if any."""
    authorization = header(scope, "authorization")
    if authorization is not None:
        keyword, _, key = authorization.strip().partition(" ")
        if keyword.lower() == TOKEN_KEYWORD:
            # A malformed "Token …" header is a presented, invalid credential.
            return key.strip() if " " not in key.strip() else ""
    return query_param(scope, "token")


async def user_for_token(key: str):
    """The active user owning DRF token `key`, or AnonymousUser.

    From this process's token cache when it holds the key (as the HTTP API
    does: a revocation any process announces drops it at once, and nothing
    is trusted longer than a heartbeat interval), else from the database.
    """
    cached = token_cache().get(key) if key else None
    if cached is not None:
        return cached[0]
    return await _user_for_token_from_database(key)


@database_sync_to_async
def _user_for_token_from_database(key: str):
    from rest_framework.authtoken.models import Token

    if not key:
        return AnonymousUser()
    ensure_revocations_heard()  # so a cached token is forgotten when revoked
    generation = token_cache().generation()
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    token_cache().put(key, token.user, token, generation)
    return token.user
