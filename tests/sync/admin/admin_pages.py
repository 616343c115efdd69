"""The admin's addresses and a logged-in browser, for the tests of sync/admin."""

from __future__ import annotations

from django.test import Client

from sync.services import get_realtime_sync

MONITOR = "/admin/sync/monitor/"
FIGURES = "/admin/sync/monitor/figures/"
HISTORY = "/admin/sync/broadcast/"
SEND = "/admin/sync/broadcast/add/"


GREETING = {"type": "announcement", "payload": '{"text": "hello"}', "topics": ""}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stored_messages() -> int:
    return get_realtime_sync().store.stats().total_messages
