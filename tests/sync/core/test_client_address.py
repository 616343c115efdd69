"""Which address a caller is counted under (sync.core.client_address)."""

from __future__ import annotations

import pytest

from sync.core.client_address import address_key, pick_address, scope_address

STATUS = "/api/sync/status"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
        ("", ""),
        (None, ""),
    ],
)
def test_ipv6_callers_are_counted_by_their_64(address, key):
    assert address_key(address) == key


def test_a_host_minting_ipv6_addresses_shares_one_api_budget(anon_client, sync_config):
    sync_config(RATE_LIMIT="3/1h")
    statuses = [
        anon_client.get(STATUS, REMOTE_ADDR=f"2001:db8:7:7::{index:x}").status_code
        for index in range(1, 5)
    ]
    assert statuses == [401, 401, 401, 429]
    other_network = anon_client.get(STATUS, REMOTE_ADDR="2001:db8:7:8::1")
    assert other_network.status_code == 401


def test_forwarded_for_counts_only_behind_the_configured_proxies(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    assert pick_address("10.0.0.2", "198.51.100.9") == "10.0.0.2"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert pick_address("10.0.0.2", "6.6.6.6, 198.51.100.9") == "198.51.100.9"
    assert pick_address("10.0.0.2", None) == "10.0.0.2"


def test_a_handshake_is_counted_under_its_peer_or_forwarded_address(settings):
    scope = {
        "client": ("10.0.0.2", 5555),
        "headers": [(b"x-forwarded-for", b"198.51.100.9")],
    }
    assert scope_address(scope) == "10.0.0.2"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert scope_address(scope) == "198.51.100.9"
    assert scope_address({"headers": []}) == ""
