"""RealtimeSync (sync/services/realtime.py): publishing, transactions, broadcasts,
handlers, fan-out.
"""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from sync.core import exceptions
from sync.core.validation import MessageInput
from sync.services import get_realtime_sync, message_handler
from sync.services.handlers import arun_handlers, unregister
from tests.sync.http.api_calls import poll


def stored_types(user_id, topics=()) -> list[str]:
    store = get_realtime_sync().store
    return [m["type"] for m in store.get_messages_since(str(user_id), 0, topics)]


@pytest.fixture
def registered():
    """Register handlers for one test only."""
    added = []

    def register(*types):
        def decorator(handler):
            added.append(handler)
            return message_handler(*types)(handler)

        return decorator

    yield register
    for handler in added:
        unregister(handler)


def test_publish_stores_a_stamped_message_for_that_user():
    message = get_realtime_sync().publish("notification.new", {"title": "Hi"}, 42)

    assert message["id"].startswith("msg_")
    assert message["userId"] == "42"
    assert isinstance(message["timestamp"], int)
    assert message["cursor"]
    assert stored_types(42) == ["notification.new"]
    assert stored_types(43) == []


def test_publish_data_update_and_publish_error_use_their_types():
    sync = get_realtime_sync()
    update = sync.publish_data_update("orders", [{"id": 1}], 7)
    error = sync.publish_error({"type": "SYNC_ERROR", "message": "Failed"}, 7)

    assert update["type"] == "data.updated"
    assert update["payload"] == {"section": "orders", "data": [{"id": 1}]}
    assert error["type"] == "error"
    assert error["payload"]["type"] == "SYNC_ERROR"


def test_publish_needs_a_user():
    with pytest.raises(ValueError, match="broadcast"):
        get_realtime_sync().publish("data.updated", {}, None)


@pytest.mark.parametrize(
    ("message_type", "payload", "error"),
    [
        ("bad type!", {}, exceptions.InvalidType),
        ("data.updated", [], exceptions.InvalidPayload),
        ("data.updated", {"x": float("nan")}, exceptions.InvalidPayload),
        ("data.updated", {"__proto__": {}}, exceptions.ForbiddenKey),
    ],
)
def test_server_publishers_obey_the_payload_rules(message_type, payload, error):
    with pytest.raises(error):
        get_realtime_sync().publish(message_type, payload, 1)
    assert stored_types(1) == []


def test_mutating_a_payload_after_publishing_does_not_change_the_message():
    payload = {"items": [1, 2]}
    get_realtime_sync().publish("data.updated", payload, 1)
    payload["items"].append(3)

    stored = get_realtime_sync().store.get_messages_since("1", 0)
    assert stored[0]["payload"] == {"items": [1, 2]}


@pytest.mark.django_db(transaction=True)
def test_publish_inside_a_transaction_waits_for_the_commit():
    with transaction.atomic():
        message = get_realtime_sync().publish("data.updated", {"n": 1}, 1)
        assert stored_types(1) == []
        assert message["timestamp"] is None

    assert stored_types(1) == ["data.updated"]
    assert isinstance(message["timestamp"], int)


@pytest.mark.django_db(transaction=True)
def test_publish_in_a_rolled_back_transaction_is_never_seen():
    def publish_then_fail():
        with transaction.atomic():
            get_realtime_sync().publish("data.updated", {"n": 1}, 1)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        publish_then_fail()

    assert stored_types(1) == []


def test_broadcast_reaches_everyone_and_topics_only_subscribers():
    sync = get_realtime_sync()
    everyone = sync.broadcast("announcement", {"text": "hello"})
    ops = sync.broadcast("announcement", {"text": "ops"}, topics=["ops"])

    assert everyone["userId"] is None
    assert everyone["topics"] == []
    assert ops["topics"] == ["ops"]
    assert stored_types(1) == ["announcement"]
    assert stored_types(1, topics=["ops"]) == ["announcement", "announcement"]


async def test_sync_calls_refuse_to_run_inside_an_event_loop():
    with pytest.raises(RuntimeError, match="apublish"):
        get_realtime_sync().publish("data.updated", {}, 1)


async def test_async_twins_publish_and_report_stats():
    sync = get_realtime_sync()
    await sync.apublish("notification.new", {"n": 1}, 5)
    await sync.apublish_data_update("orders", [], 5)
    await sync.apublish_error({"type": "SYNC_ERROR", "message": "x"}, 5)
    await sync.abroadcast("announcement", {"n": 2})

    stats = await sync.aget_stats()

    assert await sync_to_async(stored_types)(5) == [
        "notification.new",
        "data.updated",
        "error",
        "announcement",
    ]
    assert stats["messageQueue"] == {"totalQueues": 2, "totalMessages": 4}


def test_get_stats_has_the_documented_shape():
    get_realtime_sync().publish("data.updated", {}, 1)

    assert get_realtime_sync().get_stats() == {
        "messageQueue": {"totalQueues": 1, "totalMessages": 1},
        "websocket": {
            "activeConnections": 0,
            "totalConnections": 0,
            "subscriptions": 0,
        },
    }


class FakeUser:
    pk = 9


def test_client_messages_reach_their_handlers_stamped(registered):
    received = []

    @registered("todo.add")
    def on_todo(message, user):
        received.append((message["type"], message["userId"], message["id"], user))

    sent = get_realtime_sync().send_from_client(
        FakeUser, MessageInput("todo.add", {"title": "milk"})
    )

    assert received == [("todo.add", "9", sent["id"], FakeUser)]
    assert stored_types(9) == ["todo.add"]


def test_a_failing_handler_is_logged_and_the_message_still_accepted(registered, caplog):
    @registered("todo.add")
    def broken(message, user):
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR):
        sent = get_realtime_sync().send_from_client(
            FakeUser, MessageInput("todo.add", {"secret": "do-not-log"})
        )

    assert stored_types(9) == ["todo.add"]
    assert sent["timestamp"]
    assert "message handler failed" in caplog.text
    assert "do-not-log" not in caplog.text


async def test_the_async_send_path_leaves_handlers_to_run_after_the_ack(registered):
    received = []

    @registered("todo.add")
    async def on_todo(message, user):
        received.append(message["id"])

    sent = await get_realtime_sync().asend_from_client(
        FakeUser, MessageInput("todo.add", {})
    )
    assert received == []  # the socket acks first (see HandlerQueue)

    await arun_handlers(sent, FakeUser)
    assert received == [sent["id"]]


async def test_publishing_hands_the_stored_message_to_the_hub():
    delivered = []

    class Socket:
        def on_message(self, message):
            delivered.append(message.entry)

    sync = get_realtime_sync()
    sync.hub.add(Socket(), "5")

    sent = await sync.apublish("data.updated", {"n": 1}, 5)
    await sync.abroadcast("announcement", {}, topics=["ops"])

    assert [(entry.queue, entry.seq) for entry in delivered] == [
        ("user", 1),
        ("broadcast", 1),
    ]
    assert delivered[0].envelope["id"] == sent["id"]


# Python publishers ---------------------------------------------------------------


def test_python_publish_with_a_lone_surrogate_is_refused(api_client, user):
    with pytest.raises(exceptions.InvalidUnicode):
        get_realtime_sync().publish("data.updated", {"t": "\udc00"}, user.pk)
    with pytest.raises(exceptions.InvalidUnicode):
        get_realtime_sync().broadcast("announcement", {"\udc00": 1})
    assert poll(api_client)["messages"] == []
