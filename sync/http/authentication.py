"""API authentication: token (cached) then session, each with an async twin.

DRF authenticates in sync code. The async views of the API call
``aauthenticate`` instead, which asks each authenticator's ``aauthenticate``:
a cached token costs no database query and no thread, a session is looked
up in a worker thread only when the request carries a session cookie.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import (
    SessionAuthentication,
    TokenAuthentication,
    get_authorization_header,
)
from rest_framework.exceptions import PermissionDenied

from sync.core.exceptions import CsrfFailed, SyncError
from sync.core.worker_threads import in_worker_thread
from sync.services.revocation import ensure_revocations_heard
from sync.services.token_cache import token_cache

UserAuth = tuple[Any, Any] | None


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's token auth, answered from the in-process token cache when it can."""

    def authenticate(self, request) -> UserAuth:
        key = self.token_key(request)
        return None if key is None else self.authenticate_credentials(key)

    async def aauthenticate(self, request) -> UserAuth:
        """Async twin of authenticate: a cache hit never leaves the event loop."""
        key = self.token_key(request)
        if key is None:
            return None
        cached = token_cache().get(key)
        if cached is not None:
            return cached
        return await in_worker_thread(self.authenticate_credentials)(key)

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        cached = token_cache().get(key)
        if cached is not None:
            return cached
        ensure_revocations_heard()  # so a cached token is forgotten when revoked
        generation = token_cache().generation()
        user, token = super().authenticate_credentials(key)  # active users only
        token_cache().put(key, user, token, generation)
        return user, token

    def token_key(self, request) -> str | None:
        """The key of an ``Authorization: Token <key>`` header (DRF's rules)."""
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) == 1:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header. No credentials provided.")
            )
        if len(parts) > 2:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header. Token string should not contain spaces.")
            )
        try:
            return parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                _(
                    "Invalid token header. "
                    "Token string should not contain invalid characters."
                )
            ) from None


class CsrfSessionAuthentication(SessionAuthentication):
    """DRF's session auth, raising ``csrf_failed`` instead of a bare 403."""

    def enforce_csrf(self, request) -> None:
        try:
            super().enforce_csrf(request)
        except PermissionDenied as error:
            raise CsrfFailed(str(error.detail)) from None

    def authenticate(self, request) -> UserAuth:
        django_request = request._request
        if not hasattr(django_request, "user") and hasattr(django_request, "session"):
            # The lean /api/ path (sync.http.fast_path) has no AuthenticationMiddleware.
            django_request.user = get_user(django_request)
        return super().authenticate(request)

    async def aauthenticate(self, request) -> UserAuth:
        """Async twin of authenticate: no session cookie, no lookup at all."""
        if settings.SESSION_COOKIE_NAME not in request._request.COOKIES:
            return None
        return await in_worker_thread(self.authenticate)(request)


async def aauthenticate(request) -> None:
    """DRF's ``Request._authenticate`` for async views (DRF 3.18 internals).

    Sets ``request.user`` and ``request.auth`` from the first authenticator
    that recognises the request, or the anonymous user when none does.
    """
    for authenticator in request.authenticators:
        try:
            user_auth = await _aauthenticate_with(authenticator, request)
        except (exceptions.APIException, SyncError):
            request._not_authenticated()
            raise
        if user_auth is not None:
            request._authenticator = authenticator
            request.user, request.auth = user_auth
            return
    request._not_authenticated()


async def _aauthenticate_with(authenticator, request) -> UserAuth:
    twin = getattr(authenticator, "aauthenticate", None)
    if twin is not None:
        return await twin(request)
    # An authenticator with no async twin may query the database.
    return await in_worker_thread(authenticator.authenticate)(request)
