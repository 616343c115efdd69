"""``GET /metrics`` (sync/ops/metrics_view.py): for staff and listed
addresses only, and served while the rate-limit cache is out of reach.
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.config.test_settings import refusal
from tests.conftest import PASSWORD

# Who may read them --------------------------------------------------------------


def test_staff_signed_in_by_session_may_read_the_metrics(staff):
    client = Client()
    assert client.login(username=staff.username, password=PASSWORD)

    assert client.get("/metrics").status_code == 200


def test_a_user_who_is_not_staff_is_refused_403_in_the_error_envelope(api_client):
    response = api_client.get("/metrics", HTTP_ACCEPT="text/plain")

    assert response.status_code == 403
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "permission_denied"
    assert b"sync_connections" not in response.content


def test_an_anonymous_caller_is_refused_401(anon_client):
    response = anon_client.get("/metrics")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("allowed", "address"),
    [
        (["10.0.0.7"], "10.0.0.7"),
        (["10.0.0.0/8", "192.168.1.1"], "10.20.30.40"),
        (["10.0.0.0/8"], "::ffff:10.1.1.1"),
        (["fd00::/8"], "fd00::1"),
    ],
)
def test_an_allowed_address_reads_without_credentials(
    anon_client, sync_config, allowed, address
):
    sync_config(METRICS_ALLOW=allowed)

    response = anon_client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == 200
    assert b"sync_messages_published_total" in response.content


def test_an_address_outside_the_allow_list_is_refused(anon_client, sync_config):
    sync_config(METRICS_ALLOW=["10.0.0.0/8"])

    assert anon_client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 401
    # A forwarded header is the client's word, not its address.
    forged = anon_client.get(
        "/metrics", REMOTE_ADDR="11.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.1"
    )
    assert forged.status_code == 401


def test_a_bad_allow_list_refuses_to_start_naming_the_variable():
    message = refusal(SYNC_METRICS_ALLOW="10.0.0.0/8,not-an-address")

    assert "SYNC_METRICS_ALLOW" in message
    assert "not-an-address" in message


# The rate-limit cache out of reach ---------------------------------------------


def test_metrics_are_served_while_the_rate_limit_cache_is_unreachable(
    anon_client, unreachable_redis_cache, sync_config
):
    # Each process's own figures need no Redis; an outage is when they matter.
    sync_config(METRICS_ALLOW=["127.0.0.1"])

    response = anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert b"sync_connections" in response.content
