"""The dashboard page as the server renders it (sync/http/pages.py).

What it does in a browser is tested in tests/browser/; these check what the
server puts in the page, and who gets which form.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.conftest import PASSWORD

CONFIG = re.compile(
    r'<script id="dashboard-config" type="application/json">(.*?)</script>', re.S
)


def page_of(username: str) -> str:
    browser = Client()
    assert browser.login(username=username, password=PASSWORD)
    response = browser.get("/")
    assert response.status_code == 200
    return response.content.decode()


def test_anonymous_visitors_are_sent_to_the_login(db):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_the_page_loads_the_dashboard_module_and_its_styles(user):
    page = page_of("alice")
    assert '<script type="module" src="/static/sync/dashboard.js">' in page
    assert 'href="/static/sync/dashboard.css"' in page
    assert Client().get("/static/sync/dashboard.js").status_code == 200


def test_the_page_tells_the_client_where_the_api_is(user):
    config = json.loads(CONFIG.search(page_of("alice"))[1])
    assert config["client"]["websocketUrl"] == "/ws"
    assert config["client"]["pollingUrl"] == "/api/sync/poll"
    assert config["client"]["maxReconnectAttempts"] > 1000
    assert config["broadcastUrl"] == "/api/sync/broadcast"


def test_the_page_starts_in_words_the_spec_names(user):
    page = page_of("alice")
    assert re.search(r'data-testid="connection-state"[^>]*>connecting<', page)


@pytest.mark.parametrize(("username", "has_form"), [("alice", False), ("carol", True)])
def test_only_staff_get_the_broadcast_form(user, staff, username, has_form):
    page = page_of(username)
    assert ('id="broadcast-form"' in page) is has_form
    assert ('href="/admin/"' in page) is has_form
    assert 'id="send-form"' in page
    assert 'id="topics-form"' in page


def test_a_username_with_markup_is_escaped(django_user_model):
    django_user_model.objects.create_user(username="<b>x", password=PASSWORD)
    page = page_of("<b>x")
    assert "&lt;b&gt;x" in page
    assert "<b>x" not in page
