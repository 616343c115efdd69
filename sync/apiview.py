"""Base view of every /api/* endpoint.

Adds two things to DRF's APIView:
- every request is rate limited, including refused ones: a flood of bad
  tokens, CSRF failures or forbidden calls ends in 429, not endless 401/403;
- `async def` handlers, run on the event loop after the usual checks, so a
  long poll holds no thread while it waits (DRF itself is sync only).
"""

from __future__ import annotations

import inspect

from asgiref.sync import sync_to_async
from rest_framework import exceptions
from rest_framework.views import APIView

from sync.exceptions import CsrfFailed


class SyncAPIView(APIView):
    """APIView with rate-limited auth failures and async handlers."""

    def initial(self, request, *args, **kwargs) -> None:
        self.throttle_checked = False
        try:
            super().initial(request, *args, **kwargs)
        except (exceptions.AuthenticationFailed, CsrfFailed):
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

    def dispatch(self, request, *args, **kwargs):
        if self.view_is_async:
            return self.async_dispatch(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    async def async_dispatch(self, request, *args, **kwargs):
        """APIView.dispatch with the checks in a thread and the handler awaited."""
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            # Authentication, permissions and throttles may touch the database.
            await sync_to_async(self.initial)(request, *args, **kwargs)
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
