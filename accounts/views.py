"""The token endpoint for non-browser clients."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from sync.core.client_address import request_address
from sync.core.exceptions import InvalidCredentials, LoginThrottled
from sync.core.validation import check_fields
from sync.core.worker_threads import in_worker_thread
from sync.http.apiview import SyncAPIView
from sync.http.login_limits import RESERVED, aattempt_succeeded, areserve_attempt
from sync.http.schema import BODY_CODES, RETRY_AFTER, responses
from sync.http.serializers import TokenRequest, TokenResponse

TOKEN_FIELDS = frozenset({"username", "password"})


class ObtainTokenView(SyncAPIView):
    """Exchange a username and password for an API token (rate limited).

    Failed attempts count against ``SYNC_LOGIN_RATE_LIMIT`` (through
    ``authenticate``'s failure signal, see ``sync.http.login_limits``), as on the
    login pages.
    """

    authentication_classes = []  # no session, so no CSRF on this form
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenRequest,
        parameters=[RETRY_AFTER],
        responses=responses(
            200,
            TokenResponse,
            *(400, 413, 415, 429),
            notes={
                400: f"invalid_credentials (also for an inactive user), "
                f"missing_field, {BODY_CODES}."
            },
        ),
    )
    async def post(self, request):
        data = check_fields(
            request.data, TOKEN_FIELDS, required=("username", "password")
        )
        username, password = data["username"], data["password"]
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidCredentials()
        # Counted before any hashing, refused past SYNC_LOGIN_RATE_LIMIT
        # failures; the right password gives the attempt back.
        address = request_address(request)
        wait = await areserve_attempt(address, username)
        if wait is not None:
            raise LoginThrottled(wait)
        setattr(request._request, RESERVED, True)
        # Password hashing takes milliseconds: in a worker thread, not on the
        # event loop nor on the one thread shared by thread-sensitive calls.
        key = await in_worker_thread(token_for)(request._request, username, password)
        if key is None:
            raise InvalidCredentials()
        await aattempt_succeeded(address, username)
        return Response({"token": key})


def token_for(django_request, username: str, password: str) -> str | None:
    """The user's token key (created on first use), or None for bad credentials."""
    user = authenticate(django_request, username=username, password=password)
    if user is None:
        return None
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
