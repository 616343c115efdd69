"""Store entries as Redis holds them (sync/store/redis_entries.py): entries
stored by an older release are still read.
"""

from __future__ import annotations

import json

import redis

from tests.sync.store.messages import user_message


def test_entries_stored_by_an_older_release_are_still_read(redis_store, redis_url):
    # An older release kept one JSON envelope line per entry; during a
    # rolling upgrade both kinds meet in one queue.
    redis_store.add_message(user_message("1", 1))
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_store._prefix}m:u:1"
    [(entry, score)] = client.zrange(key, 0, -1, withscores=True)
    header, topics, _ = entry.split(b"\n", 2)
    envelope = {
        "id": "msg_old",
        "type": "item.added",
        "payload": {"n": 0},
        "timestamp": 0,
        "userId": "1",
        "topics": [],
        "cursor": None,
        "correlationId": None,
    }
    old = b"\n".join([header, topics, json.dumps(envelope).encode()])
    client.zrem(key, entry)
    client.zadd(key, {old: score})
    client.close()

    [message] = redis_store.read("1", since=0).parse_messages()

    assert message["id"] == "msg_old"
    assert message["payload"] == {"n": 0}
    assert message["timestamp"] > 0
    assert message["cursor"]
