"""Server-side message handlers (sync/services/handlers.py): every sent
message handed over after the answer, failures logged, runs bounded.
"""

from __future__ import annotations

import asyncio

import pytest

from sync.services import get_realtime_sync, message_handler
from sync.services.handlers import unregister
from tests.sync.http.api_calls import POLL, SEND, poll, send
from tests.sync.http.asgi_calls import (
    assert_error,
    call,
    empty_token_cache,  # noqa: F401
    token_of,
)
from tests.sync.waiting import until

# Handed every sent message ----------------------------------------------------


@pytest.fixture
def handled():
    """Register a handler for client type `todo.add`; yield what it received."""
    received: list[tuple[dict, object]] = []

    @message_handler("todo.add")
    def record(message, user):
        received.append((message, user))

    yield received
    unregister(record)


def test_sent_message_is_handed_to_server_handlers(api_client, user, handled):
    response = send(api_client, {"type": "todo.add", "payload": {"title": "milk"}})
    [(message, sender)] = handled
    assert message["id"] == response.json()["messageId"]
    assert message["payload"] == {"title": "milk"}
    assert message["userId"] == str(user.pk)
    assert sender == user


def test_failing_handler_does_not_fail_the_send(api_client):
    @message_handler("todo.add")
    def explode(message, user):
        raise RuntimeError("handler bug")

    try:
        response = send(api_client, {"type": "todo.add", "payload": {}})
    finally:
        unregister(explode)
    assert response.status_code in (200, 201), response.content
    assert len(poll(api_client)["messages"]) == 1


# After the answer, bounded ----------------------------------------------------


@pytest.fixture
def gated_handler():
    """A `todo.add` handler that waits for the gate; yields (gate, received)."""
    gate = asyncio.Event()
    received: list[int] = []

    @message_handler("todo.add")
    async def handle(message, user):
        if message["payload"].get("n") == 0:
            await gate.wait()
        received.append(message["payload"]["n"])

    yield gate, received
    unregister(handle)


async def test_send_answers_before_its_handlers_finish(api_app, user, gated_handler):
    gate, received = gated_handler
    token = await token_of(user)
    for number in (0, 1):
        message = {"type": "todo.add", "payload": {"n": number}}
        response = await call(api_app, "POST", SEND, token=token, data=message)
        assert response.status == 201
    await asyncio.sleep(0.01)  # time enough for a run out of order to happen
    assert received == []  # the second waits for the first: order per user
    gate.set()
    await until(lambda: len(received) == 2)
    assert received == [0, 1]


async def test_send_is_refused_while_too_many_handler_runs_wait(
    api_app, user, gated_handler, monkeypatch
):
    gate, _ = gated_handler
    monkeypatch.setattr(get_realtime_sync().handler_runs, "MAX_PENDING", 1)
    token = await token_of(user)
    message = {"type": "todo.add", "payload": {"n": 0}}
    assert (await call(api_app, "POST", SEND, token=token, data=message)).status == 201
    busy = await call(api_app, "POST", SEND, token=token, data=message)
    assert_error(busy, 429, "throttled")
    gate.set()
    polled = await call(api_app, "GET", POLL, token=token)
    assert polled.json()["count"] == 1  # the refused message was not stored


async def test_one_user_cannot_fill_every_handler_slot(
    api_app, user, other_user, gated_handler, monkeypatch
):
    gate, received = gated_handler
    monkeypatch.setattr(get_realtime_sync().handler_runs, "MAX_PENDING_PER_USER", 1)
    message = {"type": "todo.add", "payload": {"n": 0}}
    alice, bob = await token_of(user), await token_of(other_user)
    assert (await call(api_app, "POST", SEND, token=alice, data=message)).status == 201
    busy = await call(api_app, "POST", SEND, token=alice, data=message)
    assert_error(busy, 429, "throttled")
    # Another user's handlers still run.
    assert (await call(api_app, "POST", SEND, token=bob, data=message)).status == 201
    gate.set()
    await until(lambda: len(received) == 2)
