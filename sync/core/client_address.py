"""The client address that rate limits count, for HTTP requests and handshakes.

The address is the TCP peer, or with ``NUM_PROXIES`` set the address that
many proxies back in ``X-Forwarded-For`` (DRF's rule, so the API, the login
pages and WebSocket handshakes agree). An IPv6 client is counted by its /64:
one host is usually given a whole /64 and can pick any address in it, so
counting single addresses would let it mint a fresh budget per request.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

from sync.core.origins import header

IPV6_HOST_PREFIX = 64
# An unparsable address is counted as it is, cut to this length.
MAX_RAW_ADDRESS = 64


def pick_address(remote_addr: str | None, forwarded_for: str | None) -> str:
    """DRF's ``BaseThrottle.get_ident`` rule, on raw values, with
    ``NUM_PROXIES`` unset read as 0 (the TCP peer)."""
    # Unset counts as 0: unlike DRF, never a client-supplied header by
    # default, or a fresh X-Forwarded-For would give a fresh budget.
    num_proxies = getattr(settings, "REST_FRAMEWORK", {}).get("NUM_PROXIES") or 0
    if num_proxies == 0 or forwarded_for is None:
        return remote_addr or ""
    addresses = forwarded_for.split(",")
    return addresses[-min(num_proxies, len(addresses))].strip()


def request_address(request) -> str:
    """The client address of a Django or DRF request."""
    meta = request.META
    return pick_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


def scope_address(scope: dict[str, Any]) -> str:
    """The client address of an ASGI connection scope."""
    client = scope.get("client")
    return pick_address(client[0] if client else None, header(scope, "x-forwarded-for"))


@lru_cache(maxsize=4096)
def address_key(address: str | None) -> str:
    """What to count `address` under: itself for IPv4, its /64 for IPv6."""
    if not address:
        return ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:MAX_RAW_ADDRESS]
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    network = ipaddress.IPv6Network((parsed, IPV6_HOST_PREFIX), strict=False)
    return str(network)
