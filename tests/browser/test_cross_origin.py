"""A single-page app on another origin, using the committed client module.

The listed origin (``SYNC_CORS_ALLOWED_ORIGINS``) gets a token from
``POST /api/auth/token`` and connects by WebSocket with it (``?token=``: a
browser cannot set headers on a WebSocket handshake). The unlisted one is
refused everywhere: the token request (CORS), the WebSocket handshake (Origin
check) and the polling fallback (CORS), even with a valid token in hand.
"""

from __future__ import annotations

import re

from tests.browser.dashboard import RECONNECT_TIMEOUT_MS, SHOWN_TIMEOUT_MS, expect
from tests.browser.test_dashboard import SETTLE_MS, marker

NOT_CONNECTED = re.compile(r"^(connecting|disconnected|failed)$")
# Long enough for the refused client to try WebSocket, then polling, again.
REFUSED_WATCH_MS = 3000


def test_a_listed_origin_connects_with_a_token_and_an_unlisted_one_cannot(
    open_page, sync_server, foreign_sites
):
    listed, unlisted = foreign_sites
    login = {"api": sync_server.url, "user": "alice", "password": "alice-e2e-password"}
    allowed = open_page(listed.page_url(**login))
    refused = open_page(unlisted.page_url(**login, token=sync_server.tokens["alice"]))

    expect(allowed.locator("#token-status")).to_have_text("obtained")
    expect(allowed.locator("#state")).to_have_text(
        "connected", timeout=RECONNECT_TIMEOUT_MS
    )
    expect(allowed.locator("#transport")).to_have_text("websocket")
    expect(refused.locator("#token-status")).to_have_text("refused (no CORS)")

    text = marker("cross-origin")
    sync_server.send("alice", "chat.message", {"text": text})
    expect(allowed.locator("#log li").filter(has_text=text)).to_have_count(
        1, timeout=SHOWN_TIMEOUT_MS
    )
    refused.wait_for_timeout(max(SETTLE_MS, REFUSED_WATCH_MS))
    expect(refused.locator("#log li")).to_have_count(0)
    # It tried (the client started) and got nowhere.
    expect(refused.locator("#state")).to_have_text(NOT_CONNECTED)
