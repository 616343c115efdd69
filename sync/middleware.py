"""ASGI middleware for the WebSocket endpoint.

- WebsocketSwitch: ``SYNC_WEBSOCKET_ENABLED=false`` refuses every handshake.
- OriginCheck: a present Origin must match ALLOWED_HOSTS; a missing one is
  admitted (only browsers send it; other clients authenticate by token).
  Channels' AllowedHostsOriginValidator refuses a missing Origin.
- TokenAuthMiddleware: ``?token=<key>`` for clients without a session.

Settings are read per connection, so tests and reloads see current values.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host

from sync.conf import sync_settings


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
    """Refuse (403) a handshake whose Origin host is not in ALLOWED_HOSTS."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = dict(scope.get("headers", ())).get(b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin-1")):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


def origin_allowed(origin: str) -> bool:
    """True if the Origin's host matches ALLOWED_HOSTS (Django's rules)."""
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return False
    if not host:  # "null" and other opaque origins
        return False
    if ":" in host:  # IPv6, written as ALLOWED_HOSTS writes it
        host = f"[{host}]"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return validate_host(host, allowed)


class TokenAuthMiddleware(BaseMiddleware):
    """Authenticate by ``?token=`` when the session did not."""

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        token = query_param(scope, "token")
        if token and (user is None or not user.is_authenticated):
            scope = {**scope, "user": await user_for_token(token)}
        return await super().__call__(scope, receive, send)


@database_sync_to_async
def user_for_token(key: str):
    """The active user owning DRF token `key`, or AnonymousUser."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user
