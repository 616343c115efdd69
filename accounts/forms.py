"""Login forms that refuse password guesses past ``SYNC_LOGIN_RATE_LIMIT``."""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from sync.http.login_limits import LoginRateLimitMixin


class RateLimitedAuthenticationForm(LoginRateLimitMixin, AuthenticationForm):
    """The browser login form (/accounts/login/)."""


class RateLimitedAdminAuthenticationForm(LoginRateLimitMixin, AdminAuthenticationForm):
    """The admin login form (/admin/login/)."""
