"""The live monitor (sync/admin/monitor.py): sockets and queues, the figures
it refreshes itself from, a store out of reach.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async

from sync.core.exceptions import StoreUnavailable
from sync.services import get_realtime_sync
from tests.sync.admin.admin_pages import FIGURES, MONITOR, logged_in

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
