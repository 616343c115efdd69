"""CORS on /api/ (sync/http/cors.py, SPEC §1 SYNC_CORS_ALLOWED_ORIGINS): what a
browser page sees.

The sync path runs through Django's test Client, the async path through
AsyncClient (the ASGI handler), so both halves of the middleware are covered.
"""

from __future__ import annotations

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse
from django.test import AsyncClient, Client
from rest_framework.authtoken.models import Token

from sync.http.cors import CorsMiddleware
from tests.conftest import PASSWORD

SPA = "https://spa.example.com"
STRANGER = "https://evil.example.net"
POLL = "/api/sync/poll"
SEND = "/api/sync/send"
CSRF_SECRET = "a" * 32  # a valid unmasked CSRF secret, set as cookie and header


@pytest.fixture
def cors_for_spa(sync_config):
    sync_config(CORS_ALLOWED_ORIGINS=[SPA])


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def cors_headers(response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def varies_by_origin(response) -> bool:
    vary = response.headers.get("Vary", "")
    return "origin" in [part.strip().lower() for part in vary.split(",")]


def token_header(user) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


# Preflight ----------------------------------------------------------------------


def assert_preflight_granted(response, origin: str) -> None:
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, X-CSRFToken"
    )
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert varies_by_origin(response)


def test_a_listed_origin_gets_its_preflight_answered(cors_for_spa, transactional_db):
    response = Client().options(SEND, headers=preflight_headers(SPA))

    assert_preflight_granted(response, SPA)


async def test_the_async_stack_answers_the_preflight(cors_for_spa, transactional_db):
    response = await AsyncClient().options(SEND, headers=preflight_headers(SPA))

    assert_preflight_granted(response, SPA)


def test_an_unlisted_origin_gets_no_cors_headers(cors_for_spa, transactional_db):
    response = Client().options(SEND, headers=preflight_headers(STRANGER))

    assert response.status_code != 204
    assert cors_headers(response) == {}


def test_without_a_list_the_api_is_same_origin_only(transactional_db):
    response = Client().options(SEND, headers=preflight_headers(SPA))

    assert response.status_code != 204
    assert cors_headers(response) == {}


def test_pages_outside_the_api_get_no_cors_headers(cors_for_spa, transactional_db):
    response = Client().options("/accounts/login/", headers=preflight_headers(SPA))

    assert cors_headers(response) == {}


# Real requests --------------------------------------------------------------------


def test_a_listed_origin_can_read_api_answers(cors_for_spa, user):
    response = Client().get(POLL, headers={"Origin": SPA, **token_header(user)})

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After, Date"
    assert varies_by_origin(response)


async def test_the_async_stack_adds_the_headers(cors_for_spa, user):
    token, _ = await Token.objects.aget_or_create(user=user)
    headers = {"Origin": SPA, "Authorization": f"Token {token.key}"}

    response = await AsyncClient().get(POLL, headers=headers)

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA


def test_a_listed_origin_can_read_errors_too(cors_for_spa, transactional_db):
    response = Client().get(POLL, headers={"Origin": SPA})

    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert response.json()["error"]["code"]


def test_an_unlisted_origin_cannot_read_api_answers(cors_for_spa, user):
    response = Client().get(POLL, headers={"Origin": STRANGER, **token_header(user)})

    assert response.status_code == 200  # CORS hides answers; it blocks nothing
    assert cors_headers(response) == {}
    assert varies_by_origin(response)


# CSRF stays enforced for session-authenticated cross-origin writes -----------------


def session_post(user, origin: str):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    client.cookies["csrftoken"] = CSRF_SECRET
    body = {"type": "chat.message", "payload": {"text": "hi"}}
    headers = {"Origin": origin, "X-CSRFToken": CSRF_SECRET}
    return client.post(SEND, body, content_type="application/json", headers=headers)


def test_cors_alone_does_not_admit_a_cross_origin_session_post(cors_for_spa, user):
    response = session_post(user, SPA)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert response.headers["Access-Control-Allow-Origin"] == SPA


def test_a_session_post_passes_when_the_origin_is_also_csrf_trusted(
    cors_for_spa, settings, user
):
    settings.CSRF_TRUSTED_ORIGINS = [SPA]

    response = session_post(user, SPA)

    assert response.status_code in (200, 201)
    assert response.json()["success"] is True


# Middleware contract ----------------------------------------------------------------


def test_the_middleware_follows_the_chain_it_is_in():
    async def async_view(request):
        return HttpResponse()

    assert iscoroutinefunction(CorsMiddleware(async_view))
    assert not iscoroutinefunction(CorsMiddleware(lambda request: HttpResponse()))
