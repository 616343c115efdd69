"""The admin (SPEC §7): the live monitor, and the broadcast history and form.

Staff only: a logged-out visitor is sent to the admin login, and so is a
logged-in user who is not staff. The broadcast form publishes through
RealtimeSync only once confirmed, so sockets and pollers of any user get it
and the history records it once, with source admin and the sender.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from sync.core.exceptions import StoreUnavailable
from sync.models import Broadcast
from sync.services import get_realtime_sync

MONITOR = "/admin/sync/monitor/"
FIGURES = "/admin/sync/monitor/figures/"
HISTORY = "/admin/sync/broadcast/"
SEND = "/admin/sync/broadcast/add/"
ADMIN_PAGES = [MONITOR, FIGURES, HISTORY, SEND]
GREETING = {"type": "announcement", "payload": '{"text": "hello"}', "topics": ""}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_browser(staff) -> Client:
    return logged_in(staff)


def stored_messages() -> int:
    return get_realtime_sync().store.stats().total_messages


# Who may see the pages -------------------------------------------------------


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_logged_out_visitors_are_sent_to_the_admin_login(anon_client, page):
    response = Client().get(page)

    assert response.status_code == 302
    assert response.url == f"/admin/login/?next={page}"


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_users_who_are_not_staff_are_sent_to_the_admin_login(user, page):
    response = logged_in(user).get(page)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_a_user_who_is_not_staff_cannot_broadcast(user):
    response = logged_in(user).post(SEND, {**GREETING, "confirm": "1"})

    assert response.status_code == 302
    assert (stored_messages(), Broadcast.objects.count()) == (0, 0)


def test_the_admin_index_links_the_monitor_and_the_history(staff_browser):
    page = staff_browser.get("/admin/").content.decode()

    assert f'href="{MONITOR}"' in page
    assert f'href="{HISTORY}"' in page


# The monitor -----------------------------------------------------------------


async def test_the_monitor_shows_sockets_and_queues_largest_first(
    ws_connect, user, other_user, staff
):
    await ws_connect(user)
    sync = get_realtime_sync()
    await sync.apublish("item.added", {"n": 1}, other_user.pk)
    await sync.apublish("item.added", {"n": 2}, other_user.pk)
    await sync.apublish("item.added", {"n": 3}, user.pk)
    browser = await sync_to_async(logged_in)(staff)

    page = (await sync_to_async(browser.get)(MONITOR)).content.decode()
    figures = (await sync_to_async(browser.get)(FIGURES)).json()

    assert "Realtime sync monitor" in page
    assert 'data-figure="status.websocket.connections">1<' in page
    assert page.index(f"user {other_user.pk} (bob)") < page.index(
        f"user {user.pk} (alice)"
    )
    assert figures["status"]["websocket"]["connections"] == 1
    assert figures["status"]["polling"] == {
        "enabled": True,
        "endpoint": "/api/sync/poll",
        "queues": 2,
        "messages": 3,
    }
    assert figures["queues"]["largest"] == [
        {"queue": str(other_user.pk), "messages": 2, "username": "bob"},
        {"queue": str(user.pk), "messages": 1, "username": "alice"},
    ]
    assert figures["thisProcess"]["connections"] == 1
    assert figures["store"]["backend"] == "memory"
    assert figures["instances"] == []  # one process: nothing shared to list


def test_the_monitor_figures_match_the_status_api(staff_browser, staff_client):
    figures = staff_browser.get(FIGURES).json()["status"]
    status = staff_client.get("/api/sync/status").json()["status"]

    assert set(figures) == set(status)
    figures.pop("lastCheck"), status.pop("lastCheck")
    assert figures == status


def test_the_monitor_refreshes_itself_from_its_figures(staff_browser):
    page = staff_browser.get(MONITOR).content.decode()

    assert f'data-figures-url="{FIGURES}"' in page
    assert "setTimeout(refresh" in page


def test_the_figures_answer_503_when_the_store_is_unavailable(
    staff_browser, monkeypatch
):
    def unavailable(sync):
        raise StoreUnavailable()

    monkeypatch.setattr("sync.admin.monitor.snapshot", unavailable)

    figures = staff_browser.get(FIGURES)
    page = staff_browser.get(MONITOR)

    assert figures.status_code == 503
    assert figures.json()["success"] is False
    assert figures.json()["error"]["code"] == "store_unavailable"
    assert page.status_code == 200
    assert StoreUnavailable.default_detail in page.content.decode()


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


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ('{"text": "hello"', "The payload is not valid JSON"),
        ("[1, 2]", "Payload must be a JSON object."),
        ('{"__proto__": {}}', "Payload keys __proto__"),
    ],
)
def test_a_bad_payload_is_shown_on_its_field_and_nothing_is_sent(
    staff_browser, payload, error
):
    for step in ({}, {"confirm": "1"}):  # a tampered confirmation too
        response = staff_browser.post(SEND, {**GREETING, "payload": payload, **step})

        assert response.status_code == 200
        assert error in str(response.context["form"].errors["payload"])
        assert 'class="form-row errors field-payload"' in response.content.decode()
    assert (stored_messages(), Broadcast.objects.count()) == (0, 0)


def test_a_bad_type_and_bad_topics_are_shown_on_their_fields(staff_browser):
    response = staff_browser.post(
        SEND, {"type": "no spaces", "payload": "{}", "topics": "a b", "confirm": "1"}
    )

    errors = response.context["form"].errors
    assert "Message type must match" in str(errors["type"])
    assert "Topics must be" in str(errors["topics"])
    assert stored_messages() == 0


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
