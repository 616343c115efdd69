"""The broadcast history and form (sync/admin/broadcasts.py).

The form publishes through RealtimeSync only once confirmed, so sockets and
pollers of any user get it and the history records it once, with source admin
and the sender.
"""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async

from sync.core.exceptions import StoreUnavailable
from sync.models import Broadcast
from sync.services import get_realtime_sync
from tests.sync.admin.admin_pages import (
    GREETING,
    HISTORY,
    SEND,
    logged_in,
    stored_messages,
)

# The broadcast form ----------------------------------------------------------


async def test_a_confirmed_broadcast_reaches_sockets_and_pollers_and_is_recorded(
    ws_connect, user, other_user, other_client, staff
):
    socket, _ = await ws_connect(user)
    browser = await sync_to_async(logged_in)(staff)

    review = await sync_to_async(browser.post)(SEND, GREETING)
    nothing_yet = await sync_to_async(stored_messages)()
    sent = await sync_to_async(browser.post)(SEND, {**GREETING, "confirm": "1"})
    frame = json.loads((await socket.receive_output(2))["text"])
    polled = await sync_to_async(other_client.get)("/api/sync/poll", {"since": 0})

    assert "Send this broadcast to 1 connected client?" in review.content.decode()
    assert nothing_yet == 0  # the review step sends nothing
    assert sent.status_code == 302
    assert sent.url == HISTORY
    assert (frame["type"], frame["payload"]) == ("announcement", {"text": "hello"})
    assert [m["id"] for m in polled.json()["messages"]] == [frame["id"]]
    record = await Broadcast.objects.select_related("sent_by").aget()
    assert (record.message_id, record.source) == (frame["id"], "admin")
    assert (record.sent_by, record.sent_by_username) == (staff, "carol")


async def test_a_topic_broadcast_reaches_only_subscribers_of_its_topics(
    ws_connect, user, other_user, staff
):
    ops, _ = await ws_connect(user, query="topics=ops")
    elsewhere, _ = await ws_connect(other_user, query="topics=sales")
    browser = await sync_to_async(logged_in)(staff)

    await sync_to_async(browser.post)(
        SEND, {**GREETING, "topics": "ops, hr", "confirm": "1"}
    )
    frame = json.loads((await ops.receive_output(2))["text"])

    assert frame["topics"] == ["ops", "hr"]
    assert await elsewhere.receive_nothing(0.3)
    record = await Broadcast.objects.aget()
    assert record.topics == ["ops", "hr"]


def test_a_broadcast_the_store_refuses_shows_the_error_and_is_flagged_unpublished(
    staff_browser, monkeypatch
):
    def unavailable(message):
        raise StoreUnavailable()

    monkeypatch.setattr(get_realtime_sync().store, "add_message", unavailable)

    response = staff_browser.post(SEND, {**GREETING, "confirm": "1"})

    assert response.status_code == 200
    assert StoreUnavailable.default_detail in response.content.decode()
    record = Broadcast.objects.get()
    assert (record.type, record.published) == ("announcement", False)
    history = staff_browser.get(HISTORY + "?published__exact=0").content.decode()
    assert "announcement" in history


def test_change_it_goes_back_to_the_form_with_the_values_kept(staff_browser):
    response = staff_browser.post(SEND, {**GREETING, "edit": "1"})

    page = response.content.decode()
    assert "Review before sending" in page
    assert "{&quot;text&quot;: &quot;hello&quot;}" in page
    assert stored_messages() == 0


# The history -----------------------------------------------------------------


def test_the_history_is_read_only_with_search_and_filters(staff_browser, staff):
    get_realtime_sync().broadcast("announcement", {}, sent_by=staff, source="api")
    get_realtime_sync().broadcast("system.notice", {}, source="command")
    record = Broadcast.objects.get(type="announcement")

    searched = staff_browser.get(HISTORY, {"q": "system"})
    filtered = staff_browser.get(HISTORY, {"source__exact": "api"})
    detail = staff_browser.get(f"{HISTORY}{record.pk}/change/")
    changed = staff_browser.post(f"{HISTORY}{record.pk}/change/", {"type": "x"})
    deleted = staff_browser.post(f"{HISTORY}{record.pk}/delete/", {"post": "yes"})

    assert listed_types(searched) == ["system.notice"]
    assert listed_types(filtered) == ["announcement"]
    assert "Send a broadcast" in searched.content.decode()
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert Broadcast.objects.get(pk=record.pk).type == "announcement"


def listed_types(response) -> list[str]:
    return [record.type for record in response.context["cl"].result_list]
