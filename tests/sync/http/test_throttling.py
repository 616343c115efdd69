"""The HTTP rate limit of SPEC §4 (sync/http/throttling.py, `SYNC_RATE_LIMIT`)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from sync.http.throttling import SyncRateThrottle
from tests.conftest import PASSWORD, FakeClock

STATUS = "/api/sync/status"
SEND = "/api/sync/send"
TOKEN = "/api/auth/token"
# A whole number of minutes, so the test starts at the beginning of a window.
WINDOW_START = 60 * 29_166_667.0
LIMIT = 3


@pytest.fixture(autouse=True)
def three_per_minute(sync_config):
    sync_config(RATE_LIMIT=f"{LIMIT}/1m")


@pytest.fixture
def timer(monkeypatch) -> FakeClock:
    """The throttle's clock, standing at the start of a one-minute window."""
    clock = FakeClock(start=WINDOW_START)
    monkeypatch.setattr(SyncRateThrottle, "timer", clock)
    return clock


def use_up(client: APIClient, path: str = STATUS, **extra) -> list[int]:
    """Spend the whole budget; return the statuses the requests got."""
    return [client.get(path, **extra).status_code for _ in range(LIMIT)]


def assert_throttled(response, retry_after: int | None = None) -> None:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1
    if retry_after is not None:
        assert response["Retry-After"] == str(retry_after)
        assert body["error"]["details"]["retryAfter"] == retry_after


def login_body() -> dict:
    return {"username": "alice", "password": PASSWORD}


# Authenticated callers ----------------------------------------------------------


def test_fourth_request_in_the_window_is_429_with_retry_after(api_client, timer):
    assert use_up(api_client) == [200] * LIMIT
    timer.advance(15)
    assert_throttled(api_client.get(STATUS), retry_after=45)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/sync/poll"),
        ("post", "/api/sync/send"),
        ("post", "/api/sync/broadcast"),
        ("get", "/api/schema/"),
        ("get", "/api/sync/nope"),
        ("delete", STATUS),
    ],
)
def test_budget_is_shared_by_every_api_route(staff_client, timer, method, path):
    use_up(staff_client)
    response = getattr(staff_client, method)(
        path, {"type": "chat", "payload": {}}, format="json"
    )
    assert_throttled(response, retry_after=60)


def test_throttled_message_is_not_delivered(api_client, timer):
    use_up(api_client)
    response = api_client.post(SEND, {"type": "chat"}, format="json")
    assert_throttled(response)
    timer.advance(60)
    assert api_client.get("/api/sync/poll").json()["messages"] == []


def test_other_users_are_unaffected(api_client, other_client, timer):
    use_up(api_client)
    assert_throttled(api_client.get(STATUS))
    assert other_client.get(STATUS).status_code == 200


def test_budget_is_per_user_across_token_and_session(api_client, user, timer):
    session = APIClient()
    assert session.login(username="alice", password=PASSWORD)
    assert [api_client.get(STATUS).status_code for _ in range(2)] == [200, 200]
    assert session.get(STATUS).status_code == 200
    assert_throttled(session.get(STATUS))
    assert_throttled(api_client.get(STATUS))


def test_budget_comes_back_in_the_next_window(api_client, timer):
    use_up(api_client)
    timer.advance(59)
    assert_throttled(api_client.get(STATUS), retry_after=1)
    timer.advance(1)
    assert use_up(api_client) == [200] * LIMIT
    assert_throttled(api_client.get(STATUS), retry_after=60)


def test_authenticated_requests_do_not_spend_the_ip_budget(
    api_client, anon_client, timer
):
    use_up(api_client, REMOTE_ADDR="10.0.0.1")
    response = anon_client.get(STATUS, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 401


def test_refused_broadcasts_are_rate_limited_too(api_client, timer):
    body = {"type": "news", "payload": {}}
    statuses = [
        api_client.post("/api/sync/broadcast", body, format="json").status_code
        for _ in range(LIMIT)
    ]
    assert statuses == [403] * LIMIT
    assert_throttled(api_client.post("/api/sync/broadcast", body, format="json"))


def test_csrf_failures_are_rate_limited_too(user, timer):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    statuses = [
        client.post(SEND, {"type": "chat"}, format="json").status_code
        for _ in range(LIMIT)
    ]
    assert statuses == [403] * LIMIT
    assert_throttled(client.post(SEND, {"type": "chat"}, format="json"))


# Anonymous callers ------------------------------------------------------------


def test_anonymous_requests_are_counted_per_ip(anon_client, timer):
    assert use_up(anon_client, REMOTE_ADDR="10.0.0.1") == [401] * LIMIT
    assert_throttled(anon_client.get(STATUS, REMOTE_ADDR="10.0.0.1"), retry_after=60)
    assert anon_client.get(STATUS, REMOTE_ADDR="10.0.0.2").status_code == 401


def test_flood_of_bad_tokens_ends_in_429(anon_client, timer):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert use_up(anon_client, REMOTE_ADDR="10.0.0.1") == [401] * LIMIT
    for _ in range(3):
        assert_throttled(anon_client.get(STATUS, REMOTE_ADDR="10.0.0.1"))


def test_forwarded_for_header_does_not_escape_the_ip_limit(anon_client, timer):
    for number in range(LIMIT):
        anon_client.get(
            STATUS, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{number}"
        )
    response = anon_client.get(
        STATUS, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )
    assert_throttled(response)


def test_token_endpoint_is_rate_limited(user, anon_client, timer):
    wrong = {"username": "alice", "password": "guess"}
    statuses = [
        anon_client.post(TOKEN, wrong, format="json").status_code for _ in range(LIMIT)
    ]
    assert statuses == [400] * LIMIT
    response = anon_client.post(TOKEN, login_body(), format="json")
    assert_throttled(response)
    assert "token" not in response.json()


def test_token_endpoint_works_again_in_the_next_window(user, anon_client, timer):
    wrong = {"username": "alice", "password": "guess"}
    for _ in range(LIMIT + 1):
        anon_client.post(TOKEN, wrong, format="json")
    timer.advance(60)
    response = anon_client.post(TOKEN, login_body(), format="json")
    assert response.status_code == 200
    assert "token" in response.json()
