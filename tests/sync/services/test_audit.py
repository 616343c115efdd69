"""The broadcast history (sync/services/audit.py): who sent which broadcast,
and which ones the store refused.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from sync.core import exceptions
from sync.core.exceptions import StoreUnavailable
from sync.models import Broadcast
from sync.services import get_realtime_sync
from tests.sync.http.api_calls import BROADCAST, POLL, broadcast
from tests.sync.http.asgi_calls import (
    assert_error,
    call,
    empty_token_cache,  # noqa: F401
    token_of,
)

# Through the API --------------------------------------------------------------


def test_broadcast_is_recorded_for_the_admin(staff_client, staff):
    response = broadcast(
        staff_client,
        {"type": "announcement", "payload": {"text": "hi"}, "topics": ["ops"]},
    )
    record = Broadcast.objects.get(message_id=response.json()["messageId"])
    assert record.sent_by == staff
    assert record.sent_by_username == "carol"
    assert record.type == "announcement"
    assert record.payload == {"text": "hi"}
    assert record.topics == ["ops"]
    assert record.source == "api"
    assert record.created_at is not None


# The store failing under a broadcast ------------------------------------------


async def test_a_broadcast_the_store_refuses_answers_503_and_is_flagged_unpublished(
    api_app, staff, monkeypatch
):
    async def unavailable(message):
        raise StoreUnavailable()

    monkeypatch.setattr(get_realtime_sync().store, "aadd_message", unavailable)
    token = await token_of(staff)
    data = {"type": "announcement", "payload": {"text": "hi"}}

    response = await call(api_app, "POST", BROADCAST, token=token, data=data)

    assert_error(response, 503, "store_unavailable")
    record = await Broadcast.objects.aget()
    assert (record.type, record.published) == ("announcement", False)


async def test_a_broadcast_stored_before_the_store_failed_stays_in_the_history(
    api_app, staff, user, monkeypatch
):
    # Redis may write the message and then fail to answer: it is delivered,
    # and every delivered broadcast must be in the history.
    store = get_realtime_sync().store
    add_message = store.aadd_message

    async def stored_then_unavailable(message):
        await add_message(message)
        raise StoreUnavailable()

    monkeypatch.setattr(store, "aadd_message", stored_then_unavailable)
    data = {"type": "announcement", "payload": {"text": "hi"}}

    response = await call(
        api_app, "POST", BROADCAST, token=await token_of(staff), data=data
    )
    polled = await call(api_app, "GET", POLL, token=await token_of(user))

    assert_error(response, 503, "store_unavailable")
    assert [m["type"] for m in polled.json()["messages"]] == ["announcement"]
    assert await Broadcast.objects.filter(type="announcement").aexists()


async def test_broadcast_is_recorded(api_app, staff):
    token = await token_of(staff)
    data = {"type": "announcement", "payload": {"text": "hi"}, "topics": ["ops"]}
    response = await call(api_app, "POST", BROADCAST, token=token, data=data)
    assert response.status == 201, response.body
    record = await Broadcast.objects.aget(message_id=response.json()["messageId"])
    assert (record.sent_by_id, record.source, record.topics) == (
        staff.pk,
        "api",
        ["ops"],
    )


# Recorded by RealtimeSync ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_broadcast_is_recorded_only_when_a_person_sent_it(staff):
    sync = get_realtime_sync()
    sync.broadcast("announcement", {"text": "from code"})
    sent = sync.broadcast(
        "system.maintenance", {"at": "22:00"}, ["ops"], sent_by=staff, source="api"
    )

    record = Broadcast.objects.get()
    assert record.message_id == sent["id"]
    assert (record.type, record.topics, record.payload) == (
        "system.maintenance",
        ["ops"],
        {"at": "22:00"},
    )
    assert (record.sent_by, record.sent_by_username, record.source) == (
        staff,
        "carol",
        "api",
    )


@pytest.mark.django_db(transaction=True)
def test_a_refused_broadcast_raises_the_store_error_even_if_it_cannot_be_flagged(
    staff, monkeypatch, caplog
):
    sync = get_realtime_sync()

    def unavailable(message):
        raise exceptions.StoreUnavailable()

    def database_down(*args, **kwargs):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(sync.store, "add_message", unavailable)
    monkeypatch.setattr(Broadcast.objects, "filter", database_down)

    with pytest.raises(exceptions.StoreUnavailable):
        sync.broadcast("announcement", {}, sent_by=staff, source="command")

    assert "broadcast not flagged unpublished" in caplog.text
    assert Broadcast.objects.get().published  # recorded; the flag was lost
