"""Base view of every /api/* endpoint.

Adds two things to DRF's APIView:
- every request is rate limited, including refused ones: a flood of bad
  tokens, CSRF failures or forbidden calls ends in 429, not endless 401/403;
- `async def` handlers, with DRF's checks (authentication, throttles,
  permissions) run by their async twins on the event loop, so a request
  takes no thread unless a check needs the database (a token not cached
  yet, a session), and a long poll holds no thread while it waits (DRF
  itself is sync only).
"""

from __future__ import annotations

import inspect

from asgiref.sync import sync_to_async
from rest_framework import exceptions
from rest_framework.views import APIView

from sync.core.exceptions import CsrfFailed
from sync.http.authentication import aauthenticate

REFUSED_WHILE_AUTHENTICATING = (exceptions.AuthenticationFailed, CsrfFailed)


class SyncAPIView(APIView):
    """APIView with rate-limited auth failures and async handlers."""

    def initial(self, request, *args, **kwargs) -> None:
        self.throttle_checked = False
        try:
            super().initial(request, *args, **kwargs)
        except REFUSED_WHILE_AUTHENTICATING:
            # Raised while authenticating, before any check below: count the
            # request against the caller's IP before refusing it.
            self.check_throttles(request)
            raise

    def check_permissions(self, request) -> None:
        # Throttle first, so refused requests (403, 401) count too.
        self.check_throttles(request)
        super().check_permissions(request)

    def check_throttles(self, request) -> None:
        """Count each request once, whichever check reaches it first."""
        if not self.throttle_checked:
            self.throttle_checked = True
            super().check_throttles(request)

    async def ainitial(self, request, *args, **kwargs) -> None:
        """Async twin of initial: the same checks, in the same order."""
        self.throttle_checked = False
        self.format_kwarg = self.get_format_suffix(**kwargs)
        negotiated = self.perform_content_negotiation(request)
        request.accepted_renderer, request.accepted_media_type = negotiated
        version, scheme = self.determine_version(request, *args, **kwargs)
        request.version, request.versioning_scheme = version, scheme
        try:
            await aauthenticate(request)
        except REFUSED_WHILE_AUTHENTICATING:
            await self.acheck_throttles(request)  # counted against the IP
            raise
        await self.acheck_throttles(request)
        self.check_permissions(request)  # no I/O: user loaded, throttle counted

    async def acheck_throttles(self, request) -> None:
        """Async twin of check_throttles (DRF's loop, each throttle's twin)."""
        if self.throttle_checked:
            return
        self.throttle_checked = True
        waits = [
            throttle.wait()
            for throttle in self.get_throttles()
            if not await _aallow(throttle, request, self)
        ]
        if waits:
            durations = [wait for wait in waits if wait is not None]
            self.throttled(request, max(durations, default=None))

    def dispatch(self, request, *args, **kwargs):
        if self.view_is_async:
            return self.async_dispatch(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    async def async_dispatch(self, request, *args, **kwargs):
        """APIView.dispatch with the checks and the handler awaited."""
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await self.ainitial(request, *args, **kwargs)
            response = self.handler_for(request)(request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    def handler_for(self, request):
        """The method handler for this request, or the 405 handler."""
        method = request.method.lower()
        if method in self.http_method_names:
            return getattr(self, method, self.http_method_not_allowed)
        return self.http_method_not_allowed


async def _aallow(throttle, request, view) -> bool:
    twin = getattr(throttle, "aallow_request", None)
    if twin is not None:
        return await twin(request, view)
    # A throttle with no async twin may do I/O: keep it off the event loop.
    return await sync_to_async(throttle.allow_request, thread_sensitive=False)(
        request, view
    )
