"""The HTTP API (SPEC §4) served by a real daphne process.

Timings are printed (``pytest -s``) and asserted with room for a loaded 2-core
CI machine: a long poll answering within ~100 ms of a publish is asserted as
under 0.5 s.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from tests.contract import MESSAGE_KEYS, POLL_KEYS

pytestmark = pytest.mark.e2e

# SPEC §1 default SYNC_MAX_PAYLOAD_BYTES; bodies may be 4096 bytes bigger (§5).
MAX_PAYLOAD_BYTES = 65536
BODY_LIMIT = MAX_PAYLOAD_BYTES + 4096
LONG_POLLS = 50
# A server whose limits are small enough to see them at work.
TIGHT_ENV = {"SYNC_POLL_MAX_WAIT": "1", "SYNC_MAX_PAYLOAD_BYTES": "1024"}
TIGHT_BODY_LIMIT = 1024 + 4096


def poll_path(**params) -> str:
    return f"/api/sync/poll?{urlencode(params)}"


def message_body(size: int, type: str = "chat.message") -> bytes:
    """A /send body of exactly `size` bytes (padding in the payload)."""
    empty = json.dumps({"type": type, "payload": {"text": ""}}).encode()
    body = json.dumps({"type": type, "payload": {"text": "a" * (size - len(empty))}})
    assert len(body) == size
    return body.encode()


def payload_of_size(size: int) -> dict[str, str]:
    """A payload whose compact JSON is exactly `size` bytes."""
    return {"text": "a" * (size - len('{"text":""}'))}


def assert_error(response, status: int, code: str | None = None) -> None:
    """`response` has `status` and the SPEC §4 error envelope (with `code`)."""
    assert response.status == status, response.body
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"]["code"], str)
    assert code is None or body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


def timed_poll(server, user: str, **params):
    """Run a poll to its end; return (response, monotonic time it answered)."""
    response = server.request("GET", poll_path(**params), user=user)
    return response, time.monotonic()


def assert_still_serving(server, user: str = "alice") -> None:
    """The server is alive and answers a plain poll promptly."""
    assert server.process.poll() is None, server.log()
    started = time.monotonic()
    response = server.request("GET", poll_path(since=0, limit=1), user=user)
    assert response.status == 200, response.body
    assert response.json()["success"] is True
    assert time.monotonic() - started < 1.0


def test_readme_curl_example_gets_a_token_then_polls(server):
    # curl -X POST $URL/api/auth/token -d '{"username": …, "password": …}'
    credentials = {"username": "alice", "password": server.password("alice")}
    token = server.request("POST", "/api/auth/token", data=credentials)
    assert token.status == 200, token.body
    assert token.json() == {"token": server.tokens["alice"]}

    # curl -H 'Authorization: Token <token>' "$URL/api/sync/poll?since=0"
    before_ms = time.time() * 1000
    response = server.request(
        "GET",
        "/api/sync/poll?since=0",
        headers={"Authorization": f"Token {token.json()['token']}"},
    )

    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == POLL_KEYS
    assert body["success"] is True
    assert isinstance(body["messages"], list)
    assert body["count"] == len(body["messages"])
    assert abs(body["timestamp"] - before_ms) < 60_000
    assert isinstance(body["cursor"], str)
    assert body["cursor"]
    assert body["hasMore"] is False
    assert body["gap"] is False


def test_poll_returns_a_sent_message_in_the_envelope_to_its_sender_only(server):
    alice_cursor = server.head_cursor("alice")
    bob_cursor = server.head_cursor("bob")
    sent = server.send("alice", "chat.message", {"text": "hello"})

    page = server.poll("alice", cursor=alice_cursor)
    assert page["count"] == 1
    (message,) = page["messages"]
    assert set(message) == MESSAGE_KEYS
    assert message["id"] == sent["messageId"]
    assert message["timestamp"] == sent["timestamp"]
    assert (message["type"], message["payload"]) == ("chat.message", {"text": "hello"})
    assert isinstance(message["userId"], str)
    assert message["topics"] == []
    assert server.poll("bob", cursor=bob_cursor)["messages"] == []


def test_long_poll_answers_soon_after_a_message_is_published(server):
    cursor = server.head_cursor("alice")
    with ThreadPoolExecutor(max_workers=1) as pool:
        long_poll = pool.submit(timed_poll, server, "alice", cursor=cursor, wait=10)
        time.sleep(0.5)
        assert not long_poll.done(), "the long poll answered with nothing to say"
        send_started = time.monotonic()
        sent = server.send("alice", "chat.message", {"text": "wake up"})
        sent_at = time.monotonic()
        response, answered_at = long_poll.result(timeout=5)

    # The poll often answers before the send's own response is read (< 0):
    # the figure asserted counts from the moment the send was issued.
    latency = answered_at - send_started
    print(
        f"\nlong poll answered {(answered_at - sent_at) * 1000:.1f} ms after the "
        f"send's response, {latency * 1000:.1f} ms after the send was issued"
    )
    assert response.status == 200, response.body
    body = response.json()
    assert set(body) == POLL_KEYS
    assert [message["id"] for message in body["messages"]] == [sent["messageId"]]
    assert body["count"] == 1
    assert latency < 0.5


def test_long_poll_with_nothing_published_answers_empty_after_wait(server):
    cursor = server.head_cursor("alice")
    started = time.monotonic()
    response = server.request("GET", poll_path(cursor=cursor, wait=1), user="alice")
    elapsed = time.monotonic() - started

    print(f"\nempty long poll (wait=1) answered after {elapsed:.2f} s")
    assert response.status == 200, response.body
    body = response.json()
    assert set(body) == POLL_KEYS
    assert body["success"] is True
    assert (body["messages"], body["count"]) == ([], 0)
    assert (body["hasMore"], body["gap"]) == (False, False)
    assert 0.9 <= elapsed < 3.0
    # Its cursor resumes where the client was: nothing later is skipped.
    sent = server.send("alice", "chat.message", {"text": "after the wait"})
    later = server.poll("alice", cursor=body["cursor"])
    assert [message["id"] for message in later["messages"]] == [sent["messageId"]]


def test_long_poll_is_not_woken_by_another_users_message(server):
    cursor = server.head_cursor("bob")
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        long_poll = pool.submit(timed_poll, server, "bob", cursor=cursor, wait=1)
        time.sleep(0.3)
        server.send("alice", "chat.message", {"text": "not for bob"})
        response, answered_at = long_poll.result(timeout=5)

    assert response.status == 200, response.body
    assert response.json()["messages"] == []
    assert answered_at - started >= 0.9


def test_fifty_long_polls_do_not_hold_up_other_requests(asgi_server):
    # 25 per user: lift the per-user bound on waiting long polls.
    server = asgi_server(SYNC_POLL_MAX_WAITING_PER_USER=LONG_POLLS)
    users = ["alice", "bob"] * (LONG_POLLS // 2)
    cursors = {user: server.head_cursor(user) for user in set(users)}
    in_flight = threading.Semaphore(0)

    def hold_long_poll(user: str):
        path = poll_path(cursor=cursors[user], wait=10)
        connection = server.start_request("GET", path, user=user)
        in_flight.release()
        return server.finish(connection), time.monotonic()

    with ThreadPoolExecutor(max_workers=LONG_POLLS) as pool:
        long_polls = [pool.submit(hold_long_poll, user) for user in users]
        for _ in users:
            assert in_flight.acquire(timeout=10), "long polls were not all sent"
        time.sleep(0.5)  # let the server park every one of them
        assert not any(poll.done() for poll in long_polls)

        started = time.monotonic()
        plain = server.request("GET", poll_path(since=0), user="carol")
        plain_seconds = time.monotonic() - started
        started = time.monotonic()
        sent = server.request(
            "POST",
            "/api/sync/send",
            user="carol",
            data={"type": "chat.message", "payload": {"text": "busy?"}},
        )
        send_seconds = time.monotonic() - started
        assert not any(poll.done() for poll in long_polls), "woken by carol's send"

        broadcast = server.broadcast("carol", "announcement", {"text": "to all"})
        broadcast_at = time.monotonic()
        results = [poll.result(timeout=10) for poll in long_polls]

    slowest = max(answered_at for _, answered_at in results) - broadcast_at
    print(
        f"\nwith {LONG_POLLS} long polls in flight: plain poll "
        f"{plain_seconds * 1000:.1f} ms, POST /send {send_seconds * 1000:.1f} ms, "
        f"all long polls answered {slowest * 1000:.1f} ms after the broadcast"
    )
    assert plain.status == 200, plain.body
    assert sent.status in (200, 201), sent.body
    assert plain_seconds < 1.0
    assert send_seconds < 1.0
    for response, _ in results:
        assert response.status == 200, response.body
        ids = [message["id"] for message in response.json()["messages"]]
        assert ids == [broadcast["messageId"]]
    assert slowest < 3.0


def test_client_leaving_in_the_middle_of_a_long_poll_does_not_break_it(server):
    cursor = server.head_cursor("alice")
    log_before = len(server.log())
    abandoned = [
        server.start_request("GET", poll_path(cursor=cursor, wait=10), user="alice")
        for _ in range(5)
    ]
    time.sleep(0.5)
    for connection in abandoned:
        connection.close()
    time.sleep(0.3)

    assert_still_serving(server)
    # A new long poll of the same user is still woken by the next message.
    with ThreadPoolExecutor(max_workers=1) as pool:
        long_poll = pool.submit(timed_poll, server, "alice", cursor=cursor, wait=10)
        time.sleep(0.5)
        sent = server.send("alice", "chat.message", {"text": "still there?"})
        sent_at = time.monotonic()
        response, answered_at = long_poll.result(timeout=5)
    assert response.status == 200, response.body
    assert [m["id"] for m in response.json()["messages"]] == [sent["messageId"]]
    assert answered_at - sent_at < 0.5
    assert "Traceback" not in server.log()[log_before:]


@pytest.mark.parametrize("size", [BODY_LIMIT + 1, 1_000_000], ids=["limit+1", "1MB"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_refused_with_413(server, size, chunked):
    cursor = server.head_cursor("alice")
    response = server.request(
        "POST",
        "/api/sync/send",
        user="alice",
        body=message_body(size),
        headers={"Content-Type": "application/json"},
        chunked=chunked,
    )

    assert_error(response, 413, "payload_too_large")
    assert server.poll("alice", cursor=cursor)["messages"] == []
    assert_still_serving(server)


def test_payload_at_the_limit_is_delivered_and_one_byte_more_is_refused(server):
    cursor = server.head_cursor("alice")
    largest = payload_of_size(MAX_PAYLOAD_BYTES)
    sent = server.send("alice", "chat.message", largest)
    one_byte_more = {
        "type": "chat.message",
        "payload": payload_of_size(MAX_PAYLOAD_BYTES + 1),
    }
    too_big = server.request("POST", "/api/sync/send", user="alice", data=one_byte_more)

    assert_error(too_big, 413, "payload_too_large")
    page = server.poll("alice", cursor=cursor)
    assert [message["id"] for message in page["messages"]] == [sent["messageId"]]
    assert page["messages"][0]["payload"] == largest


def test_chunked_body_under_the_limit_is_accepted(server):
    cursor = server.head_cursor("alice")
    response = server.request(
        "POST",
        "/api/sync/send",
        user="alice",
        body=message_body(20_000),
        headers={"Content-Type": "application/json"},
        chunked=True,
    )

    assert response.status in (200, 201), response.body
    page = server.poll("alice", cursor=cursor)
    assert [message["id"] for message in page["messages"]] == [
        response.json()["messageId"]
    ]


def test_malformed_json_gets_400_and_the_server_keeps_serving(server):
    for body in (b'{"type": "chat.message", "payload": {', b"\xff\xfe", b"NaN"):
        response = server.request(
            "POST",
            "/api/sync/send",
            user="alice",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_json")
    assert_still_serving(server)
    server.send("alice", "chat.message", {"text": "valid again"})


def test_unauthenticated_requests_get_401_and_the_server_keeps_serving(server):
    no_credentials = server.request("GET", poll_path(since=0))
    bad_token = server.request(
        "GET", poll_path(since=0), headers={"Authorization": "Token not-a-real-key"}
    )
    anonymous_send = server.request(
        "POST",
        "/api/sync/send",
        data={"type": "chat.message", "payload": {"text": "who am I?"}},
    )

    for response in (no_credentials, bad_token, anonymous_send):
        assert_error(response, 401)
    assert_still_serving(server)


@pytest.fixture(scope="module")
def tight_server(asgi_server):
    """A server started with small SYNC_POLL_MAX_WAIT and payload limits."""
    return asgi_server(**TIGHT_ENV)


def test_poll_max_wait_from_the_environment_caps_long_polls(tight_server):
    cursor = tight_server.head_cursor("alice")
    started = time.monotonic()
    response = tight_server.request(
        "GET", poll_path(cursor=cursor, wait=10), user="alice"
    )
    elapsed = time.monotonic() - started

    assert response.status == 200, response.body
    assert response.json()["messages"] == []
    assert 0.9 <= elapsed < 3.0


def test_payload_limit_from_the_environment_sets_the_body_limit(server, tight_server):
    body = message_body(TIGHT_BODY_LIMIT + 1)
    headers = {"Content-Type": "application/json"}

    refused = tight_server.request(
        "POST", "/api/sync/send", user="alice", body=body, headers=headers
    )
    accepted = server.request(
        "POST", "/api/sync/send", user="alice", body=body, headers=headers
    )

    assert_error(refused, 413, "payload_too_large")
    assert refused.json()["error"]["details"]["limit"] == TIGHT_BODY_LIMIT
    assert accepted.status in (200, 201), accepted.body
