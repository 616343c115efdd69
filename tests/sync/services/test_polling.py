"""Polls and long polls (sync/services/polling.py): the per-user bound on waiting
polls, answers on shutdown, polling while other threads publish.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.db import connection
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from sync.core.exceptions import StoreUnavailable
from sync.services import get_realtime_sync, lifecycle
from tests.sync.http.api_calls import numbers, poll, publish
from tests.sync.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_shutdown():
    lifecycle.reset()
    yield
    lifecycle.reset()


class TokenClient:
    """An AsyncClient that sends the user's token with every GET."""

    def __init__(self, key: str) -> None:
        self.client = AsyncClient()
        self.headers = {"Authorization": f"Token {key}"}

    async def get(self, path: str, params: dict | None = None):
        return await self.client.get(path, params or {}, headers=self.headers)


async def client_for(user) -> TokenClient:
    token, _ = await Token.objects.aget_or_create(user=user)
    return TokenClient(token.key)


async def wait_until_waiting(user, count: int) -> None:
    for _ in range(200):
        if get_realtime_sync().waiting_polls.count(str(user.pk)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} long polls never started waiting")


async def test_one_long_poll_beyond_the_per_user_bound_gets_429(
    user, other_user, sync_config
):
    sync_config(POLL_MAX_WAITING_PER_USER=2)
    alice, bob = await client_for(user), await client_for(other_user)
    waiting = [
        asyncio.create_task(alice.get("/api/sync/poll", {"wait": "5"}))
        for _ in range(2)
    ]
    await wait_until_waiting(user, 2)

    refused = await alice.get("/api/sync/poll", {"wait": "5"})
    bob_waits = asyncio.create_task(bob.get("/api/sync/poll", {"wait": "5"}))
    await wait_until_waiting(other_user, 1)
    plain = await alice.get("/api/sync/poll")  # not waiting: no bound

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert refused.headers["Retry-After"] == "1"
    assert plain.status_code == 200
    await get_realtime_sync().abroadcast("announcement", {"n": 1})
    answers = await asyncio.gather(*waiting, bob_waits)
    assert [answer.json()["count"] for answer in answers] == [1, 1, 1]
    assert get_realtime_sync().waiting_polls.count(str(user.pk)) == 0


async def test_shutdown_answers_waiting_long_polls_at_once(user):
    alice = await client_for(user)
    waiting = asyncio.create_task(alice.get("/api/sync/poll", {"wait": "20"}))
    await wait_until_waiting(user, 1)

    lifecycle.begin_shutdown()
    answer = await asyncio.wait_for(waiting, 2)

    assert answer.status_code == 200
    assert answer.json()["messages"] == []


async def test_a_store_failing_under_a_waiting_long_poll_answers_503_at_once(
    user, monkeypatch
):
    async def unavailable(user_id, position, timeout):
        await asyncio.sleep(0.05)
        raise StoreUnavailable()

    monkeypatch.setattr(get_realtime_sync().store, "wait_for_messages", unavailable)
    alice = await client_for(user)

    answer = await asyncio.wait_for(alice.get("/api/sync/poll", {"wait": "20"}), 2)

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["Retry-After"] == "2"


# The serving path never parses what it serves ---------------------------------


@pytest.fixture
def parsing_forbidden(monkeypatch):
    """Any parse of a stored message's text fails the test."""
    from sync.store.paging import StoredMessage

    def parsed(*args, **kwargs):
        raise AssertionError("a stored message was parsed on the serving path")

    monkeypatch.setattr(StoredMessage, "for_reader", parsed)
    monkeypatch.setattr(StoredMessage, "envelope", property(parsed))


@pytest.mark.django_db(transaction=True)
async def test_polls_and_long_polls_splice_stored_text_without_parsing_it(
    user, parsing_forbidden
):
    # A page of dict-heavy messages parsed back into objects cost 41 ms of
    # the event loop and 24 MB of short-lived objects per poll.
    from sync.http.fast_path import ApiHandler
    from tests.sync.http.asgi_calls import call, token_of

    sync = get_realtime_sync()
    for number in range(3):
        await sync.apublish("data.updated", {"n": number, "a": [{}] * 500}, user.pk)
    app, token = ApiHandler(), await token_of(user)

    short = await call(app, "GET", "/api/sync/poll?since=0", token=token)
    cursor = short.json()["cursor"]
    waiting = asyncio.ensure_future(
        call(app, "GET", f"/api/sync/poll?cursor={cursor}&wait=5", token=token)
    )
    await until(lambda: sync.waiting_polls.count(str(user.pk)) == 1)
    await sync.apublish("data.updated", {"n": 3}, user.pk)
    woken = await waiting

    assert [m["payload"]["n"] for m in short.json()["messages"]] == [0, 1, 2]
    assert [m["payload"]["n"] for m in woken.json()["messages"]] == [3]


# Long poll --------------------------------------------------------------------


def publish_once_waiting(user) -> threading.Thread:
    """Publish for `user` from another thread once a long poll of theirs
    waits (or after 10 s: the poll then fails the test by its time)."""

    def run() -> None:
        deadline = time.monotonic() + 10
        waiting = get_realtime_sync().waiting_polls
        while not waiting.count(str(user.pk)) and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            publish(user, 42)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_long_poll_answers_as_soon_as_a_message_arrives(api_client, user):
    start = poll(api_client)
    publisher = publish_once_waiting(user)
    began = time.monotonic()
    body = poll(api_client, cursor=start["cursor"], wait=20)
    elapsed = time.monotonic() - began
    publisher.join()
    assert numbers(body["messages"]) == [42]
    assert elapsed < 10


def test_long_poll_is_capped_by_poll_max_wait(api_client, sync_config):
    sync_config(POLL_MAX_WAIT=0.3)
    began = time.monotonic()
    body = poll(api_client, wait=60)
    elapsed = time.monotonic() - began
    assert body["messages"] == []
    assert 0.25 <= elapsed < 10


def test_long_poll_returns_at_once_when_messages_are_waiting(api_client, user):
    publish(user, 1)
    began = time.monotonic()
    body = poll(api_client, wait=20)
    assert numbers(body["messages"]) == [1]
    assert time.monotonic() - began < 10


# Polling while other threads publish --------------------------------------------


PUBLISHERS = 4
PER_PUBLISHER = 150


def publish_many(user_pk: int, publisher: int, start: threading.Event) -> None:
    sync = get_realtime_sync()
    start.wait()
    for index in range(PER_PUBLISHER):
        payload = {"publisher": publisher, "index": index}
        if index % 4 == 0:
            sync.broadcast("announcement", payload)
        else:
            sync.publish("data.updated", payload, user_pk)


# Which response field to pass back as which query parameter.
PASS_BACK = {"since": "timestamp", "cursor": "cursor"}


def poll_until_done(api_client, threads, param: str) -> list[dict]:
    """Poll with `limit=20`, passing back `timestamp` or `cursor` each time."""
    seen: list[dict] = []
    position = {"since": "0"}
    while True:
        finished = not any(thread.is_alive() for thread in threads)
        response = api_client.get("/api/sync/poll", {**position, "limit": 20})
        assert response.status_code == 200
        body = response.json()
        assert not body["gap"]
        seen += body["messages"]
        position = {param: str(body[PASS_BACK[param]])}
        if finished and not body["hasMore"]:
            return seen


@pytest.mark.parametrize("param", ["since", "cursor"])
def test_concurrent_publishing_is_seen_exactly_once_in_order(api_client, user, param):
    start = threading.Event()
    threads = [
        threading.Thread(target=publish_many, args=(user.pk, number, start))
        for number in range(PUBLISHERS)
    ]
    for thread in threads:
        thread.start()
    start.set()

    seen = poll_until_done(api_client, threads, param)
    for thread in threads:
        thread.join()

    ids = [message["id"] for message in seen]
    assert len(ids) == len(set(ids)) == PUBLISHERS * PER_PUBLISHER
    for publisher in range(PUBLISHERS):
        order = [
            m["payload"]["index"]
            for m in seen
            if m["payload"]["publisher"] == publisher
        ]
        assert order == list(range(PER_PUBLISHER))
    stamps = [message["timestamp"] for message in seen]
    assert stamps == sorted(stamps)
