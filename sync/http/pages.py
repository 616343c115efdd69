"""Browser pages served by the sync app: the demo dashboard (SPEC §7)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

# The dashboard never gives up: a demo left open should come back by itself
# after a restart or a network outage, however long (the client's backoff
# keeps the retries sparse meanwhile).
DASHBOARD_RECONNECT_ATTEMPTS = 1_000_000
# sync/routing.py; the client resolves it against the page (ws: or wss:).
WEBSOCKET_PATH = "/ws"


def dashboard_config() -> dict[str, Any]:
    """What the page's script needs from the server."""
    return {
        "client": {
            "websocketUrl": WEBSOCKET_PATH,
            "pollingUrl": reverse("sync-poll"),
            "maxReconnectAttempts": DASHBOARD_RECONNECT_ATTEMPTS,
        },
        "broadcastUrl": reverse("sync-broadcast"),
    }


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The dashboard: connection, orders, notifications, send (and broadcast)."""
    context = {"dashboard_config": dashboard_config()}
    return render(request, "sync/index.html", context)
