"""Failed logins per client address and per username (``SYNC_LOGIN_RATE_LIMIT``).

Each failed login is counted twice, against the client address and against
the username. Once either count has reached the limit, a login is refused
with 429 and a ``Retry-After`` until the window ends, *before* the password
is checked: hashing a guess is what let six guessers slow everyone's login
page to a second.

The login pages and the token endpoint count an attempt *before* they check
its password (``reserve_attempt``) and give it back if it succeeds
(``attempt_succeeded``): counted only after the check, every guess sent at
once would pass a check that sees none of the others. Any other login form
that only reports failures through Django's ``user_login_failed`` signal is
counted after the fact. A successful login resets nothing else.

This is the project's own limiter rather than django-axes: axes writes an
``AccessAttempt`` row per failed guess with its default handler, and its
cache handler relies on Django's cache, which without Redis is LocMemCache,
the cache that evicted live counters; it also needs its own authentication
backend and middleware in the host project. Here the counters are those of
every other limit (``sync.services.ratelimit``): in-process, never evicted while
live, or in Redis, shared by every instance; no database write per guess.

Usernames are counted case-folded, so ``Alice`` and ``alice`` share a budget.
Guessing one account's password can lock its owner out for the rest of the
window: the price of refusing the guesses. While the counters' Redis is out
of reach the login pages neither count nor refuse (a page answering 500
would lock everyone out); the token endpoint answers 503 like the whole API.
"""

from __future__ import annotations

import functools
import logging

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from sync.core.client_address import address_key, request_address
from sync.core.conf import sync_settings
from sync.core.exceptions import StoreUnavailable
from sync.services.ratelimit import (
    agive_back_shared,
    ahit_shared,
    give_back_shared,
    hit_shared,
)

logger = logging.getLogger(__name__)

LOGIN_SCOPE = "login"
# Longer names are no valid username; they share a key with their prefix.
MAX_USERNAME_KEY = 150


def identities(address: str | None, username: object) -> list[str]:
    """What a login attempt is counted against: its address, its username."""
    keys = []
    if address:
        keys.append(f"ip:{address_key(address)}")
    if isinstance(username, str) and username:
        keys.append(f"user:{username.casefold()[:MAX_USERNAME_KEY]}")
    return keys


def reserve_attempt(address: str | None, username: object) -> int | None:
    """Count a login attempt before its password is checked.

    Returns the seconds to wait when it is one too many, else None. While
    the counters' Redis is out of reach nothing is counted or refused.
    """
    rate = sync_settings.login_rate_limit
    keys = identities(address, username)
    hits = []
    try:
        for key in keys:
            hits.append(hit_shared(key, rate, scope=LOGIN_SCOPE))
    except StoreUnavailable:
        keys = keys[: len(hits)]
        _give_back(keys)
        return None
    return _judge(address, keys, hits, rate)


async def areserve_attempt(address: str | None, username: object) -> int | None:
    """Async twin of reserve_attempt (its store errors are the caller's)."""
    rate = sync_settings.login_rate_limit
    keys = identities(address, username)
    hits = [await ahit_shared(key, rate, scope=LOGIN_SCOPE) for key in keys]
    return _judge(address, keys, hits, rate)


def attempt_succeeded(address: str | None, username: object) -> None:
    """A reserved attempt was the right password: it counts as no failure."""
    try:
        _give_back(identities(address, username))
    except StoreUnavailable:
        return


async def aattempt_succeeded(address: str | None, username: object) -> None:
    """Async twin of attempt_succeeded."""
    rate = sync_settings.login_rate_limit
    for key in identities(address, username):
        await agive_back_shared(key, rate, scope=LOGIN_SCOPE)


def _give_back(keys: list[str]) -> None:
    rate = sync_settings.login_rate_limit
    for key in keys:
        give_back_shared(key, rate, scope=LOGIN_SCOPE)


def _judge(address, keys, hits, rate) -> int | None:
    """The seconds to wait if an identity is past the limit, else None."""
    over = [hit for hit in hits if hit.over(rate)]
    if not over:
        return None
    _log_first_refusal(address, keys, hits, rate)
    return max(hit.retry_after for hit in over)


def _log_first_refusal(address, keys, hits, rate) -> None:
    """One line per identity and window: a flood is not a log flood."""
    for key, hit in zip(keys, hits, strict=True):
        if hit.count == rate.limit + 1:
            logger.warning(
                "login attempts throttled",
                extra={
                    "by": key.partition(":")[0],  # never the username itself
                    "client": address_key(address) if address else None,
                    "retry_after": hit.retry_after,
                },
            )


def count_failure(address: str | None, username: object) -> None:
    """Count one failed login of a form that reserved nothing beforehand."""
    rate = sync_settings.login_rate_limit
    for key in identities(address, username):
        try:
            hit_shared(key, rate, scope=LOGIN_SCOPE)
        except StoreUnavailable:
            return


# Set on a request whose attempt was counted before its password was checked.
RESERVED = "sync_login_reserved"


@receiver(user_login_failed, dispatch_uid="sync.http.login_limits.count")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    if getattr(request, RESERVED, False):
        return  # counted already, before the check
    username = credentials.get(get_user_model().USERNAME_FIELD)
    count_failure(request_address(request) if request is not None else None, username)


def refusal_message(seconds: int) -> str:
    """What the login page says past the limit."""
    minutes = -(-seconds // 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"Too many failed login attempts. Try again in {wait}."


class LoginRateLimitMixin:
    """For an AuthenticationForm: refuse past the limit, before authenticate.

    The refusal is a form error (the page shows it); ``rate_limited_login``
    turns the answer into a 429 with ``Retry-After``.
    """

    retry_after: int | None = None

    def clean(self):
        request = self.request
        address = request_address(request) if request is not None else None
        username = self.cleaned_data.get("username")
        wait = reserve_attempt(address, username)
        if wait is not None:
            self.retry_after = wait
            if request is not None:
                request.login_retry_after = wait
            raise forms.ValidationError(refusal_message(wait), code="throttled")
        if request is not None:
            setattr(request, RESERVED, True)
        cleaned = super().clean()  # raises for a wrong password: it stays counted
        attempt_succeeded(address, username)
        return cleaned


def rate_limited_login(view):
    """Wrap a login view: a refused attempt is answered with 429."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        wait = getattr(request, "login_retry_after", None)
        if wait is not None:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response

    return wrapped
