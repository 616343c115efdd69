"""Polling while other threads publish: nothing skipped, nothing repeated."""

from __future__ import annotations

import threading

import pytest

from sync.services import get_realtime_sync

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
