"""Failed logins per address and per username (sync.http.login_limits)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import redis
from django.contrib.auth.backends import ModelBackend
from django.test import Client

from sync.http.login_limits import identities, refusal_message
from sync.services import ratelimit
from tests.conftest import PASSWORD, FakeClock

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
TOKEN = "/api/auth/token"
# A whole number of hours: the tests run inside one window.
START = 3600 * 480_000.0
LIMIT = 3


@pytest.fixture(autouse=True)
def three_failures_per_hour(sync_config):
    sync_config(LOGIN_RATE_LIMIT=f"{LIMIT}/1h")


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch) -> FakeClock:
    clock = FakeClock(start=START)
    monkeypatch.setattr(ratelimit, "clock", clock)
    return clock


@pytest.fixture
def password_checks(monkeypatch) -> list[str]:
    """Usernames whose password the model backend checked."""
    checked: list[str] = []
    authenticate = ModelBackend.authenticate

    def recorded(backend, request, username=None, password=None, **kwargs):
        checked.append(username)
        return authenticate(backend, request, username, password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", recorded)
    return checked


def log_in(path: str, username: str, password: str = "wrong", address="10.0.0.1"):
    return Client().post(
        path, {"username": username, "password": password}, REMOTE_ADDR=address
    )


def get_token(username: str, password: str = "wrong", address="10.0.0.1"):
    return Client().post(
        TOKEN,
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=address,
    )


def assert_refused_page(response) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == "3600"
    assert "Too many failed login attempts" in response.content.decode()


@pytest.mark.parametrize("path", [LOGIN, ADMIN_LOGIN])
def test_past_the_limit_a_login_page_answers_429_without_checking_the_password(
    path, user, password_checks
):
    failed = [log_in(path, "alice").status_code for _ in range(LIMIT)]
    assert failed == [200] * LIMIT
    assert len(password_checks) == LIMIT

    refused = log_in(path, "alice", PASSWORD)  # even the right password

    assert_refused_page(refused)
    assert len(password_checks) == LIMIT
    assert 'name="password"' in refused.content.decode()  # the form, again


def test_past_the_limit_the_token_endpoint_answers_the_throttled_error(
    user, password_checks
):
    assert [get_token("alice").status_code for _ in range(LIMIT)] == [400] * LIMIT

    refused = get_token("alice", PASSWORD)

    assert refused.status_code == 429
    assert refused["Retry-After"] == "3600"
    body = refused.json()
    assert body["success"] is False
    assert body["error"]["code"] == "throttled"
    assert body["error"]["details"] == {"retryAfter": 3600}
    assert len(password_checks) == LIMIT


def test_a_username_is_counted_from_every_address_and_in_any_case(user):
    for number, name in enumerate(["alice", "Alice", "ALICE"]):
        assert log_in(LOGIN, name, address=f"10.0.1.{number}").status_code == 200
    assert_refused_page(log_in(LOGIN, "alice", address="10.0.2.1"))
    assert log_in(LOGIN, "bob", address="10.0.2.1").status_code == 200


def test_an_address_is_counted_whatever_the_username(transactional_db):
    for number in range(LIMIT):
        assert log_in(LOGIN, f"nobody{number}", address="10.0.3.1").status_code == 200
    assert_refused_page(log_in(LOGIN, "someone-else", address="10.0.3.1"))
    assert log_in(LOGIN, "someone-else", address="10.0.3.2").status_code == 200


def test_every_door_shares_the_budget(user):
    get_token("alice", address="10.0.4.1")
    log_in(ADMIN_LOGIN, "alice", address="10.0.4.2")
    log_in(LOGIN, "alice", address="10.0.4.3")

    assert get_token("alice", address="10.0.4.4").status_code == 429
    assert_refused_page(log_in(LOGIN, "alice", address="10.0.4.5"))


def test_the_budget_comes_back_when_the_window_ends(user, frozen_clock):
    for _ in range(LIMIT):
        log_in(LOGIN, "alice")
    frozen_clock.advance(3599)
    refused = log_in(LOGIN, "alice", PASSWORD)
    assert (refused.status_code, refused["Retry-After"]) == (429, "1")
    frozen_clock.advance(1)
    assert log_in(LOGIN, "alice", PASSWORD).status_code == 302


def test_a_successful_login_is_not_counted(user):
    for _ in range(LIMIT + 2):
        assert log_in(LOGIN, "alice", PASSWORD).status_code == 302


def test_the_failure_that_uses_a_budget_up_is_logged_once_without_the_username(
    user, caplog
):
    with caplog.at_level(logging.INFO, logger="sync.http.login_limits"):
        for _ in range(LIMIT + 3):
            log_in(LOGIN, "alice")

    lines = [
        record for record in caplog.records if record.name == "sync.http.login_limits"
    ]
    assert sorted(record.by for record in lines) == ["ip", "user"]
    assert all("alice" not in str(vars(record)) for record in lines)


def test_identities_and_message():
    assert identities("2001:db8::1", "Bob") == ["ip:2001:db8::/64", "user:bob"]
    assert identities(None, None) == []
    assert (
        refusal_message(61) == "Too many failed login attempts. Try again in 2 minutes."
    )
    assert (
        refusal_message(60) == "Too many failed login attempts. Try again in 1 minute."
    )


def test_the_login_page_still_works_while_the_counters_redis_is_away(
    user, unreachable_redis_cache
):
    assert log_in(LOGIN, "alice").status_code == 200
    assert log_in(LOGIN, "alice", PASSWORD).status_code == 302


@pytest.mark.redis
def test_with_redis_the_counters_are_keys_that_expire_with_their_window(
    settings, redis_url, user
):
    prefix = f"sync-test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": prefix,
        }
    }
    client = redis.Redis.from_url(redis_url)
    try:
        for _ in range(LIMIT):
            log_in(LOGIN, "alice")
        assert_refused_page(log_in(LOGIN, "alice", address="10.0.5.1"))

        keys = sorted(key.decode() for key in client.scan_iter(f"{prefix}*"))
        # Both addresses (every attempt is counted before its check) and the
        # username, each expiring with its window.
        assert len(keys) == 3
        assert all(0 < client.ttl(key) <= 3601 for key in keys)
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


# Guesses sent at once ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_guesses_sent_at_once_are_counted_before_any_password_is_checked(
    user, password_checks
):
    # Counted only after the check, 30 guesses in flight together all passed
    # a check that saw none of the others: each was hashed.
    from sync.http.fast_path import ApiHandler
    from tests.sync.http.asgi_calls import call

    app = ApiHandler()
    guess = {"username": "alice", "password": "wrong"}
    answers = await asyncio.gather(
        *(call(app, "POST", TOKEN, data=guess) for _ in range(30))
    )

    statuses = sorted(answer.status for answer in answers)
    assert statuses == [400] * LIMIT + [429] * (30 - LIMIT)
    assert len(password_checks) == LIMIT
