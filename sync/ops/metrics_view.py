"""``GET /metrics``: the Prometheus text format, for staff or listed addresses.

Authentication, the rate limit and the error envelope are the API's (a
``SyncAPIView``): staff sign in by session or ``Authorization: Token``; a
scraper without credentials is let in when its address is in
``SYNC_METRICS_ALLOW``. That address is the TCP peer (``REMOTE_ADDR``), never
a forwarded header a client could forge: behind a proxy it is the proxy's.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission

from sync.core import metrics
from sync.core.conf import sync_settings
from sync.core.exceptions import StoreUnavailable
from sync.http.apiview import SyncAPIView

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """The allow-list as networks (settings checked each value at start-up)."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def address_allowed(address: str | None, allowed: list[str]) -> bool:
    """True if `address` lies in one of the `allowed` addresses or networks."""
    if not address or not allowed:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a unix socket or a test client's placeholder
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return any(ip in network for network in parse_networks(tuple(allowed)))


class CanReadMetrics(BasePermission):
    """Staff, or a client whose address is in ``SYNC_METRICS_ALLOW``."""

    message = "Only staff members or allowed addresses may read the metrics."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user and user.is_authenticated and user.is_staff:
            return True
        address = request.META.get("REMOTE_ADDR")
        return address_allowed(address, sync_settings.METRICS_ALLOW)


class JsonErrorsWhateverAccepted(BaseContentNegotiation):
    """Errors in the JSON envelope even for ``Accept: text/plain`` scrapers."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(exclude=True)
class MetricsView(SyncAPIView):
    """The figures of SPEC §7 (``sync.core.metrics``), of every worker process."""

    permission_classes = [CanReadMetrics]
    content_negotiation_class = JsonErrorsWhateverAccepted

    def check_throttles(self, request) -> None:
        """Counted like any request, but served while the counters' Redis is
        out of reach: these figures are this process's own, and an outage is
        when they are wanted."""
        with contextlib.suppress(StoreUnavailable):
            super().check_throttles(request)

    def get(self, request):
        body, content_type = metrics.exposition(request.META.get("HTTP_ACCEPT", ""))
        return HttpResponse(body, content_type=content_type)
