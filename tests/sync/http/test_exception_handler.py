"""The error envelope of failures no view answers itself
(sync/http/exception_handler.py): a wrong method, a store out of reach.
"""

from __future__ import annotations

import pytest

from sync.services import reset_services
from sync.store.redis import RedisMessageStore
from tests.conftest import closed_port
from tests.sync.http.api_calls import BROADCAST, POLL, SEND, STATUS, TOKEN, assert_error

# Unknown paths and methods ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", SEND, "POST"),
        ("put", SEND, "POST"),
        ("post", POLL, "GET"),
        ("delete", POLL, "GET"),
        ("post", STATUS, "GET"),
        ("get", BROADCAST, "POST"),
        ("get", TOKEN, "POST"),
    ],
)
def test_wrong_method_is_405_envelope(staff_client, method, path, allowed):
    response = getattr(staff_client, method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert allowed in response["Allow"]


# A store out of reach ----------------------------------------------------------


def test_the_api_answers_503_when_the_store_is_unreachable(api_client, clock):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    reset_services(RedisMessageStore(url, prefix="unreachable:", clock=clock))

    response = api_client.get("/api/sync/poll", {"since": 0})

    assert response.status_code == 503
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "store_unavailable"
