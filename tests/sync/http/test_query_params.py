"""Query parameters of GET /api/sync/poll (sync/http/query_params.py): each
bad one refused with its code, and a since ahead of the server's clock.
"""

from __future__ import annotations

import pytest

from tests.sync.http.api_calls import POLL, assert_error, now_ms, poll

# Refused and accepted values --------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "abc"}, "invalid_since"),
        ({"since": "-1"}, "invalid_since"),
        ({"since": "1.5"}, "invalid_since"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "abc"}, "invalid_cursor"),
        ({"cursor": "Epoch-1-2"}, "invalid_cursor"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "1001"}, "invalid_limit"),
        ({"limit": "abc"}, "invalid_limit"),
        ({"limit": "-5"}, "invalid_limit"),
        ({"wait": "abc"}, "invalid_wait"),
        ({"wait": "-1"}, "invalid_wait"),
        ({"wait": "nan"}, "invalid_wait"),
        ({"wait": "inf"}, "invalid_wait"),
        ({"topics": "ops,a:b"}, "invalid_topics"),
    ],
)
def test_poll_with_bad_parameter_is_400(api_client, params, code):
    assert_error(api_client.get(POLL, params), 400, code)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "5\n"}, "invalid_since"),
        ({"limit": "5\n"}, "invalid_limit"),
        ({"cursor": "abc-1-2\n"}, "invalid_cursor"),
    ],
)
def test_poll_parameter_with_trailing_newline_is_400(api_client, params, code):
    assert_error(api_client.get(POLL, params), 400, code)


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_poll_limit_bounds_are_accepted(api_client, limit):
    assert poll(api_client, limit=limit)["messages"] == []


# Clock poisoning ------------------------------------------------------------------


def test_a_since_from_the_far_future_is_refused(api_client):
    response = api_client.get(POLL, {"since": "999999999999999999"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_since"


def test_a_since_a_little_ahead_of_the_clock_is_accepted(api_client):
    body = poll(api_client, since=now_ms() + 30_000)

    assert body["messages"] == []
    assert body["gap"] is False
