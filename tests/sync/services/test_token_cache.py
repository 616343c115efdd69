"""The per-process token cache (sync/services/token_cache.py): its bound, its
lifetime, and what empties it.

An entry is trusted one heartbeat interval at most (read when it is cached,
so settings changed later apply to later entries); revocations drop entries
by token or by user, the user given as its pk or as text (revocations heard
from other processes carry it as text).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from sync.services.token_cache import TokenCache, token_cache
from tests.conftest import FakeClock
from tests.sync.http.api_calls import BROADCAST, STATUS
from tests.sync.http.asgi_calls import empty_token_cache  # noqa: F401


@dataclass(frozen=True)
class FakeUser:
    pk: int


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock) -> TokenCache:
    cache = TokenCache()
    cache.timer = clock
    return cache


def cache_token(cache: TokenCache, key: str, pk: int) -> None:
    cache.put(key, FakeUser(pk), key, cache.generation())


# Lifetime ------------------------------------------------------------------------


def test_an_entry_is_trusted_for_one_heartbeat_interval(cache, clock, sync_config):
    sync_config(HEARTBEAT_INTERVAL=3)
    cache_token(cache, "k1", 1)

    clock.advance(2.9)
    assert cache.get("k1") == (FakeUser(1), "k1")
    clock.advance(0.1)
    assert cache.get("k1") is None


def test_the_interval_is_read_when_an_entry_is_cached(cache, clock, sync_config):
    sync_config(HEARTBEAT_INTERVAL=30)
    cache_token(cache, "early", 1)
    sync_config(HEARTBEAT_INTERVAL=2)
    cache_token(cache, "late", 2)

    clock.advance(2)

    assert cache.ttl == 2
    assert cache.get("late") is None
    assert cache.get("early") == (FakeUser(1), "early")


def test_the_default_lifetime_is_the_default_heartbeat_interval(cache):
    assert cache.ttl == 30


# Revocations ---------------------------------------------------------------------


def test_forget_user_drops_every_token_of_that_user_only(cache):
    for key, pk in (("a1", 1), ("a2", 1), ("b1", 2)):
        cache_token(cache, key, pk)

    cache.forget_user(1)

    assert (cache.get("a1"), cache.get("a2")) == (None, None)
    assert cache.get("b1") == (FakeUser(2), "b1")


def test_forget_user_takes_the_pk_as_text(cache):
    cache_token(cache, "a1", 1)

    cache.forget_user("1")

    assert cache.get("a1") is None
    assert len(cache) == 0


def test_lookup_begun_before_a_revocation_is_not_cached(cache):
    generation = cache.generation()  # a lookup starts reading the database
    cache.forget_key("k1")  # meanwhile the token is deleted
    cache.put("k1", FakeUser(1), "k1", generation)

    assert cache.get("k1") is None


def test_clearing_refuses_lookups_begun_before_it(cache):
    cache_token(cache, "a1", 1)
    generation = cache.generation()

    cache.clear()  # revocations may have been missed
    cache.put("b1", FakeUser(2), "b1", generation)

    assert (cache.get("a1"), cache.get("b1")) == (None, None)


# Bound ---------------------------------------------------------------------------


def test_full_cache_evicts_the_oldest_entry(monkeypatch):
    monkeypatch.setattr(TokenCache, "MAX_ENTRIES", 2)
    cache = TokenCache()
    for key, pk in (("k1", 1), ("k2", 2), ("k3", 3)):
        cache_token(cache, key, pk)

    assert cache.get("k1") is None
    assert cache.get("k2") == (FakeUser(2), "k2")
    assert len(cache) == 2


# Invalidation, seen through the API -------------------------------------------


def test_deleted_token_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    assert len(token_cache()) == 1
    Token.objects.filter(user=user).delete()
    response = api_client.get(STATUS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_deactivated_user_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    user.is_active = False
    user.save()
    assert api_client.get(STATUS).status_code == 401


def test_deleted_user_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    user.delete()
    assert api_client.get(STATUS).status_code == 401


def test_user_made_staff_may_broadcast_at_once(api_client, user):
    news = {"type": "news"}
    assert api_client.post(BROADCAST, news, format="json").status_code == 403
    user.is_staff = True
    user.save()
    assert api_client.post(BROADCAST, news, format="json").status_code == 201


def test_cached_token_needs_no_database(api_client, monkeypatch):
    assert api_client.get(STATUS).status_code == 200

    def no_database(*args, **kwargs):
        raise AssertionError("the token was read from the database again")

    monkeypatch.setattr(
        "rest_framework.authentication.TokenAuthentication.authenticate_credentials",
        no_database,
    )
    assert api_client.get(STATUS).status_code == 200


def test_change_without_signal_is_seen_after_one_heartbeat_interval(
    api_client, user, monkeypatch, django_user_model, sync_config
):
    sync_config(HEARTBEAT_INTERVAL=5)
    clock = FakeClock()
    monkeypatch.setattr(TokenCache, "timer", clock)
    assert api_client.get(STATUS).status_code == 200
    django_user_model.objects.filter(pk=user.pk).update(is_active=False)
    clock.advance(4)
    assert api_client.get(STATUS).status_code == 200  # within the interval: cached
    clock.advance(1)
    assert api_client.get(STATUS).status_code == 401


def test_every_user_model_signal_reaches_the_cache(user):
    assert api_status(user) == 200
    get_user_model().objects.get(pk=user.pk).save()
    assert len(token_cache()) == 0


def api_status(user) -> int:
    client = Client()
    token, _ = Token.objects.get_or_create(user=user)
    return client.get(STATUS, HTTP_AUTHORIZATION=f"Token {token.key}").status_code
