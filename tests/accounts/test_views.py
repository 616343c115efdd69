"""Browser login and logout (SPEC §4), the landing page behind them, and the token
endpoint (accounts/views.py).
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import PASSWORD
from tests.sync.http.api_calls import STATUS, TOKEN, assert_error

LOGIN = "/accounts/login/"
LOGOUT = "/accounts/logout/"


@pytest.fixture
def browser() -> Client:
    return Client()


@pytest.fixture
def logged_in(browser, user) -> Client:
    assert browser.login(username="alice", password=PASSWORD)
    return browser


def test_login_page_shows_the_form(browser, db):
    response = browser.get(LOGIN)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="username"' in page
    assert 'name="password"' in page
    assert "csrfmiddlewaretoken" in page


def test_login_with_good_credentials_goes_to_the_landing_page(browser, user):
    response = browser.post(LOGIN, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "alice" in browser.get("/").content.decode()


def test_login_follows_next(browser, user):
    response = browser.post(
        f"{LOGIN}?next=/api/sync/status",
        {"username": "alice", "password": PASSWORD, "next": "/api/sync/status"},
    )
    assert response["Location"] == "/api/sync/status"
    assert browser.get("/api/sync/status").status_code == 200


def test_login_with_bad_password_shows_an_error(browser, user):
    response = browser.post(LOGIN, {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "did not match" in response.content.decode()
    assert browser.get("/").status_code == 302


def test_login_page_refuses_a_post_without_csrf_token(user):
    browser = Client(enforce_csrf_checks=True)
    response = browser.post(LOGIN, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert browser.get("/").status_code == 302


def test_logout_by_post_ends_the_session(logged_in):
    response = logged_in.post(LOGOUT)
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert logged_in.get("/").status_code == 302
    assert logged_in.get("/api/sync/status").status_code == 401


def test_logout_by_get_is_refused_and_keeps_the_session(logged_in):
    assert logged_in.get(LOGOUT).status_code == 405
    assert logged_in.get("/").status_code == 200


def test_landing_page_sends_anonymous_visitors_to_login(browser, db):
    response = browser.get("/")
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=/"


def test_landing_page_shows_the_username(logged_in):
    response = logged_in.get("/")
    assert response.status_code == 200
    assert "alice" in response.content.decode()


def test_landing_page_links_to_the_admin_for_staff_only(logged_in, staff):
    assert 'href="/admin/"' not in logged_in.get("/").content.decode()
    staff_browser = Client()
    assert staff_browser.login(username="carol", password=PASSWORD)
    assert 'href="/admin/"' in staff_browser.get("/").content.decode()


# Token endpoint ---------------------------------------------------------------


def test_token_for_good_credentials_authenticates_the_api(user, anon_client):
    response = anon_client.post(
        TOKEN, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json().keys() == {"token"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get(STATUS).status_code == 200


def test_token_is_stable_for_the_same_user(user, anon_client):
    credentials = {"username": "alice", "password": PASSWORD}
    first = anon_client.post(TOKEN, credentials, format="json").json()["token"]
    second = anon_client.post(TOKEN, credentials, format="json").json()["token"]
    assert first == second


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "alice", "password": ""},
        {"username": "alice", "password": 12345},
        {"username": ["alice"], "password": PASSWORD},
    ],
)
def test_token_for_bad_credentials_is_400(user, anon_client, credentials):
    response = anon_client.post(TOKEN, credentials, format="json")
    assert_error(response, 400, "invalid_credentials")
    assert "token" not in response.json()


def test_token_for_inactive_user_is_400(user, anon_client):
    user.is_active = False
    user.save()
    response = anon_client.post(
        TOKEN, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert_error(response, 400, "invalid_credentials")


@pytest.mark.parametrize(
    ("body", "missing"),
    [({"username": "alice"}, "password"), ({"password": PASSWORD}, "username")],
)
def test_token_without_a_field_is_missing_field(user, anon_client, body, missing):
    error = assert_error(
        anon_client.post(TOKEN, body, format="json"), 400, "missing_field"
    )
    assert error["details"]["field"] == missing


def test_token_with_extra_field_is_unknown_field(user, anon_client):
    body = {"username": "alice", "password": PASSWORD, "remember": True}
    assert_error(anon_client.post(TOKEN, body, format="json"), 400, "unknown_field")


def test_token_needs_no_csrf_token_from_a_logged_in_browser(session_client):
    response = session_client.post(
        TOKEN, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
