"""The demo dashboard at / (SPEC §7) in a real browser, on a real server.

What each test checks is what a user sees on the page: the connection state
and transport in words, the orders, notifications and messages, each message
once, only on the pages of the user it is for.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from harness.live_server import LiveServer
from tests.browser.dashboard import RECONNECT_TIMEOUT_MS, SHOWN_TIMEOUT_MS, expect

XSS = "<img src=x onerror=alert(1)>"
# Time for something that should NOT happen (a late duplicate, a stray
# delivery, an injected script) to show up before asserting it did not.
SETTLE_MS = 500
# The dashboard's client tuned (from the page's query string) to retry within
# a second, and to try WebSocket again every second while polling, instead of
# the defaults' 30 s: the tests watch reconnections, not the backoff.
QUICK_RETRIES = "?reconnectDelay=200&maxReconnectDelay=1000&fallbackRetryInterval=1000"

# Calls of RealtimeSync (SPEC §6) for one user: [[method, [arguments…]], …].
PUBLISH = """
import json
from django.contrib.auth import get_user_model
from sync.services import get_realtime_sync

user = get_user_model().objects.get(username=%r)
for method, arguments in json.loads(%r):
    getattr(get_realtime_sync(), method)(*arguments, user.pk)
"""


def marker(label: str) -> str:
    """A text no other test (or earlier run) shows."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def publish_from_another_process(
    server: LiveServer, user: str, calls: list[tuple[str, list[Any]]]
) -> None:
    """Publish through the Python service API in a ``manage.py shell`` process.

    That process shares only the Redis store with the server, as a worker or
    a management command would.
    """
    server.shell(PUBLISH % (user, json.dumps(calls)))


def order_update(order: dict[str, Any]) -> tuple[str, list[Any]]:
    """``publish_data_update("orders", order, user_id)``."""
    return "publish_data_update", ["orders", order]


def notification(title: str) -> tuple[str, list[Any]]:
    """``publish("notification.new", {"title": title}, user_id)``."""
    return "publish", ["notification.new", {"title": title}]


def test_connects_by_websocket_and_shows_a_data_update_published_server_side(
    open_dashboard, redis_server
):
    dashboard = open_dashboard(redis_server, "alice")
    dashboard.expect_connection("websocket")
    order_id = marker("order")
    publish_from_another_process(
        redis_server,
        "alice",
        [
            order_update({"id": order_id, "status": "paid", "total": 42}),
            order_update({"id": order_id, "status": "shipped"}),
        ],
    )
    row = dashboard.part("orders").locator(f'[data-order-id="{order_id}"]')
    expect(row).to_contain_text("shipped", timeout=SHOWN_TIMEOUT_MS)
    expect(row).to_contain_text('"total":42')  # the update merged into the order
    expect(row).to_have_count(1)
    dashboard.expect_message(order_id, count=2)
    texts = dashboard.messages(order_id).all_inner_texts()  # newest first
    assert ["shipped" in text for text in texts] == [True, False]
    expect(dashboard.part("latency")).to_have_text(
        re.compile(r"^\d+ ms$"), timeout=SHOWN_TIMEOUT_MS
    )


def test_falls_back_to_polling_without_websocket_and_returns_when_it_is_back(
    open_dashboard, dedicated_asgi_server
):
    server = dedicated_asgi_server(SYNC_WEBSOCKET_ENABLED="0")
    dashboard = open_dashboard(server, "alice", query=QUICK_RETRIES)
    dashboard.expect_connection("polling")
    while_polling = marker("polled")
    server.send("alice", "chat.message", {"text": while_polling})
    dashboard.expect_message(while_polling)
    # The send form works too: POST /send with the session and CSRF token.
    from_page = marker("posted")
    assert dashboard.send("chat.message", {"text": from_page}).startswith("sent: ")
    dashboard.expect_message(from_page)

    server.overrides["SYNC_WEBSOCKET_ENABLED"] = "1"
    server.restart()
    dashboard.expect_connection("websocket")
    over_websocket = marker("live")
    server.send("alice", "chat.message", {"text": over_websocket})
    dashboard.expect_message(over_websocket)
    dashboard.page.wait_for_timeout(SETTLE_MS)
    for text in (while_polling, from_page, over_websocket):
        dashboard.expect_message(text)  # still once


def test_after_a_restart_it_reconnects_and_shows_what_was_sent_meanwhile_once(
    open_dashboard, dedicated_asgi_server, redis_env
):
    """With the Redis store, messages published while the server is down are
    kept, so "sent while it was down" is meant literally: published by
    another process between the stop and the start."""
    env = {**redis_env, "SYNC_KEY_PREFIX": redis_env["SYNC_KEY_PREFIX"] + "-restart"}
    server = dedicated_asgi_server(**env)
    dashboard = open_dashboard(server, "alice", query=QUICK_RETRIES)
    dashboard.expect_connection("websocket")
    before = marker("before")
    server.send("alice", "chat.message", {"text": before})
    dashboard.expect_message(before)

    server.stop()
    expect(dashboard.part("connection-state")).not_to_have_text(
        "connected", timeout=SHOWN_TIMEOUT_MS
    )
    while_down = [marker(f"down{number}") for number in range(3)]
    publish_from_another_process(
        server, "alice", [notification(text) for text in while_down]
    )
    server.restart()

    expect(dashboard.part("connection-state")).to_have_text(
        "connected", timeout=RECONNECT_TIMEOUT_MS
    )
    for text in while_down:
        dashboard.expect_message(text)
    dashboard.page.wait_for_timeout(SETTLE_MS)
    for text in [before, *while_down]:
        dashboard.expect_message(text)
    shown = dashboard.part("notifications").all_inner_texts()
    assert [text for text in while_down if text in shown[0]] == while_down
    dashboard.expect_connection("websocket")


def test_two_pages_of_one_user_stay_in_sync_and_another_user_sees_nothing(
    open_dashboard, sync_server
):
    first = open_dashboard(sync_server, "alice")
    second = open_dashboard(sync_server, "alice")
    other = open_dashboard(sync_server, "bob")
    for page in (first, second, other):
        page.expect_connection("websocket")

    from_first, from_second = marker("first"), marker("second")
    assert first.send("chat.message", {"text": from_first}).startswith("sent: msg_")
    assert second.send("chat.message", {"text": from_second}).startswith("sent: msg_")
    for page in (first, second):
        page.expect_message(from_first)
        page.expect_message(from_second)
    other.page.wait_for_timeout(SETTLE_MS)
    other.expect_no_message(from_first)
    other.expect_no_message(from_second)

    from_other = marker("bob")
    other.send("chat.message", {"text": from_other})
    other.expect_message(from_other)
    first.page.wait_for_timeout(SETTLE_MS)
    first.expect_no_message(from_other)
    second.expect_no_message(from_other)


def test_a_script_in_a_payload_is_shown_as_text_and_runs_nothing(
    open_dashboard, sync_server
):
    dashboard = open_dashboard(sync_server, "alice")
    dashboard.expect_connection("websocket")
    assert dashboard.send("chat.message", {"text": XSS}).startswith("sent: ")
    # Through the other views too: orders and notifications.
    sync_server.broadcast(
        "carol",
        "data.updated",
        {"section": "orders", "data": {"id": XSS, "status": XSS}},
    )
    sync_server.broadcast("carol", "announcement", {"title": XSS, XSS: XSS})

    dashboard.expect_message(XSS, count=3)
    expect(dashboard.part("orders")).to_contain_text(XSS)
    expect(dashboard.part("notifications")).to_contain_text(XSS)
    dashboard.page.wait_for_timeout(SETTLE_MS)
    assert dashboard.page.dialogs == []
    assert dashboard.page.errors == []
    expect(dashboard.page.locator("img")).to_have_count(0)


FORGE_BROADCAST = """async (withCsrfToken) => {
  const headers = {"Content-Type": "application/json"};
  if (withCsrfToken) {
    headers["X-CSRFToken"] =
      document.querySelector("input[name=csrfmiddlewaretoken]").value;
  }
  const response = await fetch("/api/sync/broadcast", {
    method: "POST", credentials: "same-origin", headers,
    body: JSON.stringify({type: "announcement", payload: {title: "forged"}}),
  });
  return {status: response.status, body: await response.json()};
}"""


def test_the_staff_broadcast_form_reaches_others_and_a_forged_one_is_refused(
    open_dashboard, sync_server
):
    staff = open_dashboard(sync_server, "carol")
    reader = open_dashboard(sync_server, "bob")
    reader.expect_connection("websocket")
    assert reader.subscribe("ops") == "Subscribed to: ops."
    to_all, to_ops, to_dev = marker("all"), marker("ops"), marker("dev")
    answer = staff.broadcast("announcement", {"title": to_all})
    assert answer.startswith("broadcast: msg_"), answer
    staff.broadcast("announcement", {"title": to_dev}, topics="dev")
    staff.broadcast("announcement", {"title": to_ops}, topics="ops, qa")
    reader.expect_message(to_all)
    reader.expect_message(to_ops)
    expect(reader.part("notifications")).to_contain_text(to_ops)
    reader.expect_no_message(to_dev)  # sent before the one to ops, which is here

    expect(reader.part("broadcast-form")).to_have_count(0)
    for with_csrf_token, code in ((True, "permission_denied"), (False, "csrf_failed")):
        forged = reader.page.evaluate(FORGE_BROADCAST, with_csrf_token)
        assert forged["status"] == 403
        assert forged["body"]["success"] is False
        assert forged["body"]["error"]["code"] == code
    reader.page.wait_for_timeout(SETTLE_MS)
    reader.expect_no_message("forged")
