"""Session authentication whose CSRF failures carry their own error code."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied

from sync.exceptions import CsrfFailed


class CsrfSessionAuthentication(SessionAuthentication):
    """DRF's session auth, raising ``csrf_failed`` instead of a bare 403."""

    def enforce_csrf(self, request) -> None:
        try:
            super().enforce_csrf(request)
        except PermissionDenied as error:
            raise CsrfFailed(str(error.detail)) from None
