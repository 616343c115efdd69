"""API authentication (sync/http/authentication.py): a token, or a session
with its CSRF token for unsafe methods.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.sync.http.api_calls import (
    BROADCAST,
    POLL,
    SCHEMA,
    SEND,
    STATUS,
    assert_error,
    poll,
    send,
)

# Helpers ----------------------------------------------------------------------


def csrf_token(client: APIClient) -> str:
    """The CSRF cookie a browser gets from any page with a form."""
    client.get("/")
    return client.cookies["csrftoken"].value


# Authentication ---------------------------------------------------------------


API_CALLS = [
    ("get", POLL),
    ("post", SEND),
    ("get", STATUS),
    ("post", BROADCAST),
    ("get", SCHEMA),
    ("get", "/api/sync/nope"),
]


@pytest.mark.parametrize(("method", "path"), API_CALLS)
def test_api_without_credentials_is_401_with_token_challenge(anon_client, method, path):
    response = getattr(anon_client, method)(path, {}, format="json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("method", "path"), API_CALLS)
def test_api_with_bad_token_is_401(anon_client, method, path):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = getattr(anon_client, method)(path, {}, format="json")
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Token"


def test_session_login_can_poll_without_csrf_token(session_client):
    assert poll(session_client)["messages"] == []


def test_session_post_without_csrf_token_is_refused(session_client, user):
    response = send(session_client, {"type": "chat", "payload": {"text": "hi"}})
    assert_error(response, 403, "csrf_failed")
    assert poll(session_client)["messages"] == []


def test_session_post_with_csrf_token_is_accepted(session_client, user):
    session_client.credentials(HTTP_X_CSRFTOKEN=csrf_token(session_client))
    response = send(session_client, {"type": "chat", "payload": {"text": "hi"}})
    assert response.status_code in (200, 201), response.content
    [message] = poll(session_client)["messages"]
    assert message["payload"] == {"text": "hi"}
    assert message["userId"] == str(user.pk)
