"""The HTTP API of SPEC §4 (sync/http/views.py), and the delivery rules of SPEC §3
seen through it.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from sync.models import Broadcast
from tests.contract import MESSAGE_KEYS, POLL_KEYS
from tests.sync.http.api_calls import (
    SEND,
    STATUS,
    assert_error,
    broadcast,
    numbers,
    poll,
    publish,
    send,
)

# Helpers ----------------------------------------------------------------------


def publish_many(user, count: int) -> None:
    for number in range(count):
        publish(user, number)


def ids(body: dict) -> list[str]:
    return [message["id"] for message in body["messages"]]


# Poll -------------------------------------------------------------------------


def test_poll_has_the_documented_shape(api_client, user):
    publish(user)
    body = poll(api_client, since=0)
    assert body.keys() == POLL_KEYS
    assert body["count"] == 1
    assert body["hasMore"] is False
    assert body["gap"] is False
    assert isinstance(body["timestamp"], int)
    assert isinstance(body["cursor"], str)
    [message] = body["messages"]
    assert message.keys() == MESSAGE_KEYS
    assert message["id"].startswith("msg_")
    assert message["type"] == "data.updated"
    assert message["payload"] == {"n": 0}
    assert message["userId"] == str(user.pk)
    assert message["topics"] == []
    assert message["correlationId"] is None
    assert isinstance(message["cursor"], str)


def test_poll_timestamps_are_server_milliseconds(api_client, user):
    before = int(time.time() * 1000)
    publish(user)
    body = poll(api_client)
    after = int(time.time() * 1000)
    assert before <= body["messages"][0]["timestamp"] <= after
    assert before - 1 <= body["timestamp"] <= after


def test_poll_returns_only_messages_after_since(api_client, user):
    publish_many(user, 3)
    first, _, third = poll(api_client)["messages"]
    assert numbers(poll(api_client, since=first["timestamp"])["messages"]) == [1, 2]
    assert poll(api_client, since=third["timestamp"])["messages"] == []


def test_resuming_from_a_message_cursor_returns_what_follows_it(api_client, user):
    publish_many(user, 4)
    messages = poll(api_client)["messages"]
    after_second = poll(api_client, cursor=messages[1]["cursor"])
    assert numbers(after_second["messages"]) == [2, 3]
    assert after_second["gap"] is False


def test_cursor_wins_over_since(api_client, user):
    start = poll(api_client)["cursor"]
    publish_many(user, 2)
    body = poll(api_client, cursor=start, since=10**15)
    assert numbers(body["messages"]) == [0, 1]


def test_empty_poll_has_no_gap_and_a_cursor_to_resume_from(api_client, user):
    body = poll(api_client)
    assert body["messages"] == []
    assert body["gap"] is False
    publish(user, 7)
    assert numbers(poll(api_client, cursor=body["cursor"])["messages"]) == [7]
    assert numbers(poll(api_client, since=body["timestamp"])["messages"]) == [7]


# Send -------------------------------------------------------------------------


def test_send_answers_message_id_and_timestamp(api_client):
    response = send(api_client, {"type": "chat", "payload": {"text": "hi"}})
    assert response.status_code in (200, 201), response.content
    body = response.json()
    assert body.keys() == {"success", "messageId", "timestamp"}
    assert body["success"] is True
    assert isinstance(body["messageId"], str)
    assert body["messageId"]
    assert isinstance(body["timestamp"], int)


def test_sent_message_reaches_the_sender_stamped_with_its_user_id(api_client, user):
    response = send(
        api_client,
        {"type": "chat", "payload": {"text": "hi"}, "correlationId": "req-1"},
    )
    [message] = poll(api_client)["messages"]
    assert message["id"] == response.json()["messageId"]
    assert message["timestamp"] == response.json()["timestamp"]
    assert message["type"] == "chat"
    assert message["payload"] == {"text": "hi"}
    assert message["userId"] == str(user.pk)
    assert message["correlationId"] == "req-1"


def test_sent_message_reaches_every_connection_of_the_sender(
    api_client, session_client
):
    send(api_client, {"type": "chat", "payload": {"text": "hi"}})
    assert len(poll(api_client)["messages"]) == 1
    assert len(poll(session_client)["messages"]) == 1


def test_sent_message_does_not_reach_other_users(api_client, other_client):
    send(api_client, {"type": "chat", "payload": {"text": "hi"}})
    assert poll(other_client)["messages"] == []


def test_sent_message_payload_defaults_to_empty_object(api_client):
    send(api_client, {"type": "chat"})
    assert poll(api_client)["messages"][0]["payload"] == {}


def deep_payload(depth: int) -> dict:
    payload: dict = {}
    for _ in range(depth - 1):
        payload = {"child": payload}
    return payload


SEND_ERRORS = [
    ({"payload": {}}, "invalid_type"),
    ({"type": "", "payload": {}}, "invalid_type"),
    ({"type": "9lives"}, "invalid_type"),
    ({"type": "a" * 65}, "invalid_type"),
    ({"type": 5}, "invalid_type"),
    ({"type": "announcement"}, "reserved_type"),
    ({"type": "error"}, "reserved_type"),
    ({"type": "ping"}, "reserved_type"),
    ({"type": "pong"}, "reserved_type"),
    ({"type": "data.updated"}, "reserved_type"),
    ({"type": "notification.new"}, "reserved_type"),
    ({"type": "system.restart"}, "reserved_type"),
    ({"type": "sync.reset"}, "reserved_type"),
    ({"type": "connection.established"}, "reserved_type"),
    ({"type": "chat", "payload": [1]}, "invalid_payload"),
    ({"type": "chat", "payload": "text"}, "invalid_payload"),
    ({"type": "chat", "payload": None}, "invalid_payload"),
    ({"type": "chat", "payload": deep_payload(33)}, "payload_too_deep"),
    ({"type": "chat", "payload": {"__proto__": {}}}, "forbidden_key"),
    ({"type": "chat", "payload": {"a": [{"constructor": 1}]}}, "forbidden_key"),
    ({"type": "chat", "payload": {"a": {"prototype": 1}}}, "forbidden_key"),
    ({"type": "chat", "correlationId": 12}, "invalid_correlation_id"),
    ({"type": "chat", "correlationId": "c" * 129}, "invalid_correlation_id"),
    ({"type": "chat", "topics": ["ops"]}, "unknown_field"),
    ([{"type": "chat"}], "invalid_message"),
    ("chat", "invalid_message"),
    (7, "invalid_message"),
]


@pytest.mark.parametrize(("body", "code"), SEND_ERRORS)
def test_send_refuses_invalid_messages(api_client, body, code):
    assert_error(send(api_client, body), 400, code)
    assert poll(api_client)["messages"] == []


@pytest.mark.parametrize("raw", ["null", "[]", '"chat"', "true"])
def test_send_with_json_that_is_not_an_object_is_invalid_message(api_client, raw):
    response = api_client.post(SEND, raw, content_type="application/json")
    assert_error(response, 400, "invalid_message")


def test_send_with_empty_body_is_missing_its_type(api_client):
    response = api_client.post(SEND, "", content_type="application/json")
    assert_error(response, 400, "invalid_type")


def test_send_accepts_32_levels_of_nesting(api_client):
    response = send(api_client, {"type": "chat", "payload": deep_payload(32)})
    assert response.status_code in (200, 201), response.content


def test_send_with_too_large_payload_is_413(api_client, sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    response = send(api_client, {"type": "chat", "payload": {"k": "x" * 200}})
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"]["limit"] == 100
    assert poll(api_client)["messages"] == []


def test_send_payload_exactly_at_the_limit_is_accepted(api_client, sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    payload = {"k": "x" * (100 - len('{"k":""}'))}
    response = send(api_client, {"type": "chat", "payload": payload})
    assert response.status_code in (200, 201), response.content


# Broadcast --------------------------------------------------------------------


def test_broadcast_answers_with_empty_topics_when_none_given(staff_client):
    response = broadcast(staff_client, {"type": "news", "payload": {"text": "hi"}})
    assert response.status_code in (200, 201), response.content
    body = response.json()
    assert body.keys() == {"success", "messageId", "timestamp", "topics"}
    assert body["success"] is True
    assert body["topics"] == []
    assert isinstance(body["messageId"], str)
    assert isinstance(body["timestamp"], int)


def test_broadcast_answers_with_its_topics(staff_client):
    response = broadcast(staff_client, {"type": "news", "topics": ["ops", "dev"]})
    assert response.json()["topics"] == ["ops", "dev"]


def test_broadcast_without_topics_reaches_everyone(
    staff_client, api_client, other_client
):
    response = broadcast(staff_client, {"type": "news", "payload": {"text": "hi"}})
    for client in (api_client, other_client, staff_client):
        [message] = poll(client)["messages"]
        assert message["id"] == response.json()["messageId"]
        assert message["userId"] is None
        assert message["topics"] == []
        assert message["payload"] == {"text": "hi"}


def test_broadcast_with_empty_topics_reaches_everyone(staff_client, api_client):
    broadcast(staff_client, {"type": "news", "topics": []})
    assert len(poll(api_client)["messages"]) == 1


@pytest.mark.parametrize(
    ("poll_topics", "sees_it"),
    [
        (None, False),
        ("other", False),
        ("ops", True),
        ("dev", True),
        ("other,ops", True),
        ("op", False),
    ],
)
def test_topic_broadcast_reaches_only_polls_naming_one_of_its_topics(
    staff_client, api_client, poll_topics, sees_it
):
    broadcast(staff_client, {"type": "news", "topics": ["ops", "dev"]})
    params = {} if poll_topics is None else {"topics": poll_topics}
    messages = poll(api_client, **params)["messages"]
    assert len(messages) == (1 if sees_it else 0)
    if sees_it:
        assert messages[0]["topics"] == ["ops", "dev"]


def test_topic_filter_does_not_hide_the_callers_own_messages(
    staff_client, api_client, user
):
    publish(user, 1)
    broadcast(staff_client, {"type": "news", "topics": ["ops"]})
    assert numbers(poll(api_client, topics="other")["messages"]) == [1]


@pytest.mark.parametrize(
    "type", ["announcement", "error", "ping", "pong", "data.reset", "system.notice"]
)
def test_staff_may_broadcast_reserved_types(staff_client, api_client, type):
    response = broadcast(staff_client, {"type": type, "payload": {}})
    assert response.status_code in (200, 201), response.content
    assert poll(api_client)["messages"][0]["type"] == type


def test_broadcast_by_non_staff_is_403_and_goes_nowhere(api_client, other_client):
    response = broadcast(api_client, {"type": "news", "payload": {}})
    assert_error(response, 403, "permission_denied")
    assert poll(other_client)["messages"] == []
    assert not Broadcast.objects.exists()


BROADCAST_ERRORS = [
    ({"payload": {}}, "invalid_type"),
    ({"type": "bad type"}, "invalid_type"),
    ({"type": "news", "payload": [1]}, "invalid_payload"),
    ({"type": "news", "payload": deep_payload(33)}, "payload_too_deep"),
    ({"type": "news", "payload": {"x": [{"__proto__": 1}]}}, "forbidden_key"),
    ({"type": "news", "topics": "ops"}, "invalid_topics"),
    ({"type": "news", "topics": ["a:b"]}, "invalid_topics"),
    ({"type": "news", "topics": [f"t{n}" for n in range(65)]}, "invalid_topics"),
    ({"type": "news", "correlationId": "x"}, "unknown_field"),
    ([], "invalid_message"),
]


@pytest.mark.parametrize(("body", "code"), BROADCAST_ERRORS)
def test_broadcast_refuses_invalid_messages(staff_client, api_client, body, code):
    assert_error(broadcast(staff_client, body), 400, code)
    assert poll(api_client)["messages"] == []
    assert not Broadcast.objects.exists()


def test_broadcast_with_too_large_payload_is_413(staff_client, sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    response = broadcast(staff_client, {"type": "news", "payload": {"k": "x" * 200}})
    assert_error(response, 413, "payload_too_large")


# Delivery across users --------------------------------------------------------


def test_message_for_a_user_reaches_that_user_only(api_client, other_client, user):
    publish(user, 1)
    assert numbers(poll(api_client)["messages"]) == [1]
    assert poll(other_client)["messages"] == []


def test_user_messages_and_broadcasts_come_in_publication_order(
    api_client, staff_client, user
):
    publish(user, 1)
    broadcast(staff_client, {"type": "news", "payload": {"n": 2}})
    publish(user, 3)
    assert numbers(poll(api_client)["messages"]) == [1, 2, 3]


# Paging -----------------------------------------------------------------------


def read_all(client: APIClient, follow: str, limit: int) -> list[dict]:
    """Read every page, passing back `cursor` or `timestamp` (as since)."""
    body = poll(client, limit=limit)
    messages = list(body["messages"])
    while body["hasMore"]:
        # A page is cut short rather than split two messages sharing a timestamp.
        assert 1 <= body["count"] <= limit
        position = (
            {"cursor": body["cursor"]}
            if follow == "cursor"
            else {"since": body["timestamp"]}
        )
        body = poll(client, limit=limit, **position)
        messages.extend(body["messages"])
    return messages


def read_all_from(client: APIClient, cursor: str, limit: int) -> list[dict]:
    """Read every page after `cursor`, following the cursor."""
    messages: list[dict] = []
    while True:
        body = poll(client, cursor=cursor, limit=limit)
        messages.extend(body["messages"])
        cursor = body["cursor"]
        if not body["hasMore"]:
            return messages


def test_limit_gives_a_page_and_has_more(api_client, user):
    publish_many(user, 5)
    body = poll(api_client, limit=2)
    assert numbers(body["messages"]) == [0, 1]
    assert body["hasMore"] is True
    assert poll(api_client, limit=5)["hasMore"] is False


def test_since_paging_sees_same_millisecond_messages_once(
    api_client, staff_client, user, store, clock
):
    # The fake clock stands still, yet a reader's messages get distinct
    # timestamps, so `since` pages of one never skip or repeat a message.
    start = poll(api_client)
    publish(user, 0)
    broadcast(staff_client, {"type": "news", "payload": {"n": 1}})
    publish(user, 2)
    seen, since, has_more = [], 0, True
    while has_more:
        body = poll(api_client, since=since, limit=1)
        seen += numbers(body["messages"])
        since, has_more = body["timestamp"], body["hasMore"]
    assert seen == [0, 1, 2]
    assert numbers(read_all_from(api_client, start["cursor"], 1)) == [0, 1, 2]


def test_cursor_page_never_exceeds_the_limit(
    api_client, staff_client, user, store, clock
):
    start = poll(api_client)
    publish(user, 0)
    broadcast(staff_client, {"type": "news", "payload": {"n": 1}})
    body = poll(api_client, cursor=start["cursor"], limit=1)
    assert numbers(body["messages"]) == [0]
    assert body["hasMore"] is True
    # The watermark steps back rather than skip the tied broadcast.
    assert numbers(poll(api_client, since=body["timestamp"])["messages"])[-1] == 1


def test_default_limit_is_100(api_client, user):
    publish_many(user, 101)
    body = poll(api_client)
    assert body["count"] == 100
    assert body["hasMore"] is True


@pytest.mark.parametrize("follow", ["cursor", "since"])
@pytest.mark.parametrize("limit", [1, 3, 7])
def test_paging_returns_every_message_once_in_order(api_client, user, follow, limit):
    publish_many(user, 10)
    messages = read_all(api_client, follow, limit)
    assert numbers(messages) == list(range(10))


@pytest.mark.parametrize("follow", ["cursor", "since"])
def test_paging_mixes_broadcasts_in_order(api_client, staff_client, user, follow):
    for number in range(6):
        if number % 2:
            broadcast(staff_client, {"type": "news", "payload": {"n": number}})
        else:
            publish(user, number)
    assert numbers(read_all(api_client, follow, 2)) == list(range(6))


@pytest.mark.parametrize("follow", ["cursor", "since"])
def test_polling_under_concurrent_publishing_never_skips_or_repeats(
    api_client, user, follow
):
    total = 200

    def publish_all() -> None:
        try:
            publish_many(user, total)
        finally:
            connection.close()

    body = poll(api_client)
    publisher = threading.Thread(target=publish_all)
    publisher.start()
    received: list[dict] = []
    deadline = time.monotonic() + 30
    while len(received) < total and time.monotonic() < deadline:
        position = (
            {"cursor": body["cursor"]}
            if follow == "cursor"
            else {"since": body["timestamp"]}
        )
        body = poll(api_client, limit=7, **position)
        received.extend(body["messages"])
    publisher.join()
    assert numbers(received) == list(range(total))


# Gaps: messages dropped by overflow, TTL or a restart -------------------------


def test_overflow_keeps_the_newest_and_reports_a_gap(api_client, user, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    publish_many(user, 5)
    body = poll(api_client, since=0)
    assert numbers(body["messages"]) == [2, 3, 4]
    assert body["gap"] is True


def test_cursor_from_before_an_overflow_reports_a_gap(api_client, user, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    before = poll(api_client)
    publish_many(user, 5)
    body = poll(api_client, cursor=before["cursor"])
    assert numbers(body["messages"]) == [2, 3, 4]
    assert body["gap"] is True


def test_cursor_after_the_dropped_messages_has_no_gap(api_client, user, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=3)
    publish_many(user, 2)
    seen = poll(api_client)
    for number in range(2, 5):
        publish(user, number)
    body = poll(api_client, cursor=seen["cursor"])
    assert numbers(body["messages"]) == [2, 3, 4]
    assert body["gap"] is False


def test_broadcast_overflow_reports_a_gap(api_client, staff_client, user, sync_config):
    sync_config(QUEUE_MAX_MESSAGES=2)
    before = poll(api_client)
    for number in range(3):
        broadcast(staff_client, {"type": "news", "payload": {"n": number}})
    body = poll(api_client, cursor=before["cursor"])
    assert numbers(body["messages"]) == [1, 2]
    assert body["gap"] is True


def test_cursor_of_another_epoch_replays_everything_with_a_gap(api_client, user):
    publish_many(user, 4)
    body = poll(api_client, cursor="deadbeef-3-0")
    assert numbers(body["messages"]) == [0, 1, 2, 3]
    assert body["gap"] is True


def test_cursor_beyond_the_history_replays_everything_with_a_gap(api_client, user):
    publish_many(user, 2)
    epoch = poll(api_client)["cursor"].split("-")[0]
    body = poll(api_client, cursor=f"{epoch}-99-0")
    assert numbers(body["messages"]) == [0, 1]
    assert body["gap"] is True


def test_messages_expire_after_the_ttl(api_client, user, store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    start = poll(api_client)
    publish_many(user, 2)
    clock.advance(9)
    body = poll(api_client, since=0)
    assert numbers(body["messages"]) == [0, 1]
    assert body["gap"] is False
    clock.advance(2)
    for params in ({"since": 0}, {"cursor": start["cursor"]}):
        body = poll(api_client, **params)
        assert body["messages"] == []
        assert body["gap"] is True


def test_only_expired_messages_are_dropped(api_client, user, store, clock, sync_config):
    sync_config(MESSAGE_TTL=10)
    publish(user, 0)
    clock.advance(6)
    publish(user, 1)
    clock.advance(6)
    body = poll(api_client, since=0)
    assert numbers(body["messages"]) == [1]
    assert body["gap"] is True


# Status -----------------------------------------------------------------------


def test_status_has_exactly_the_documented_shape(api_client):
    before = int(time.time() * 1000)
    response = api_client.get(STATUS)
    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"success", "status"}
    assert body["success"] is True
    status = body["status"]
    assert status.keys() == {"websocket", "polling", "lastCheck"}
    assert status["websocket"].keys() == {
        "enabled",
        "connections",
        "totalConnections",
        "subscriptions",
    }
    assert status["polling"].keys() == {"enabled", "endpoint", "queues", "messages"}
    assert status["websocket"] == {
        "enabled": True,
        "connections": 0,
        "totalConnections": 0,
        "subscriptions": 0,
    }
    assert status["polling"] == {
        "enabled": True,
        "endpoint": "/api/sync/poll",
        "queues": 0,
        "messages": 0,
    }
    assert before <= status["lastCheck"] <= int(time.time() * 1000)


def test_status_counts_queues_and_messages(api_client, staff_client, user, other_user):
    publish_many(user, 2)
    publish(other_user)
    broadcast(staff_client, {"type": "news"})
    polling = api_client.get(STATUS).json()["status"]["polling"]
    assert polling["queues"] == 3
    assert polling["messages"] == 4


def test_status_reports_websocket_disabled(api_client, sync_config):
    sync_config(WEBSOCKET_ENABLED=False)
    status = api_client.get(STATUS).json()["status"]
    assert status["websocket"]["enabled"] is False
    assert status["polling"]["enabled"] is True


# Unknown paths and methods ----------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api", "/api/", "/api/nope", "/api/sync/nope", "/api/sync/poll/x"]
)
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unknown_api_path_is_404_envelope_even_with_debug(
    api_client, settings, path, method
):
    settings.DEBUG = True
    response = getattr(api_client, method)(path)
    assert_error(response, 404, "not_found")
    assert response["Content-Type"].startswith("application/json")
