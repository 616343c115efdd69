"""Who may use the admin pages (sync/admin/access.py): active staff only;
anyone else is sent to the admin login.
"""

from __future__ import annotations

import pytest
from django.test import Client

from sync.models import Broadcast
from tests.sync.admin.admin_pages import (
    FIGURES,
    GREETING,
    HISTORY,
    MONITOR,
    SEND,
    logged_in,
    stored_messages,
)

ADMIN_PAGES = [MONITOR, FIGURES, HISTORY, SEND]


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
