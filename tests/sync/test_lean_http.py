"""The lean HTTP path of /api/ (sync.http.fast_path): no thread where none is needed.

Requests go through ``ApiHandler`` in-process, as ASGI (the path a real
server takes), and through the test client where only the token cache is
at stake.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth import get_user_model
from django.core.asgi import get_asgi_application
from django.test import Client
from rest_framework.authtoken.models import Token

from sync.core.exceptions import StoreUnavailable
from sync.core.rates import parse_rate
from sync.http.fast_path import ApiHandler, ApiRouter
from sync.models import Broadcast
from sync.services import get_realtime_sync, message_handler, ratelimit
from sync.services.handlers import unregister
from sync.services.token_cache import TokenCache, token_cache
from tests.conftest import PASSWORD, FakeClock

POLL = "/api/sync/poll"
SEND = "/api/sync/send"
STATUS = "/api/sync/status"
BROADCAST = "/api/sync/broadcast"
CSRF_SECRET = "b" * 32  # a valid unmasked CSRF secret, as cookie and header
WAITING_POLLS = 300
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@pytest.fixture(autouse=True)
def empty_token_cache():
    token_cache().clear()
    yield
    token_cache().clear()


@pytest.fixture
def api_app() -> ApiHandler:
    return ApiHandler()


@pytest.fixture
def thread_hops(monkeypatch) -> list:
    """Every sync_to_async call (thread-sensitive or not) made from now on."""
    calls = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        calls.append(self.func)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return calls


async def token_of(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


def request(app, method: str, path: str, *, token=None, data=None, headers=()):
    """An HttpCommunicator for one request; answer it with `answer`."""
    raw = [(b"host", b"localhost"), *headers]
    if token is not None:
        raw.append((b"authorization", f"Token {token}".encode()))
    body = b""
    if data is not None:
        body = json.dumps(data).encode()
        raw += [(b"content-type", b"application/json")]
        raw += [(b"content-length", str(len(body)).encode())]
    return HttpCommunicator(app, method, path, body=body, headers=raw)


async def answer(communicator, timeout: float = 5) -> Answer:
    response = await communicator.get_response(timeout)
    await communicator.wait(timeout)  # the application has returned
    headers = {
        name.decode().lower(): value.decode() for name, value in response["headers"]
    }
    return Answer(response["status"], headers, response["body"])


async def call(app, method: str, path: str, **options) -> Answer:
    return await answer(request(app, method, path, **options))


def assert_error(response: Answer, status: int, code: str) -> None:
    assert response.status == status, response.body
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["details"], dict)


async def until(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# Token cache: invalidation ---------------------------------------------------


def test_deleted_token_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    assert len(token_cache()) == 1
    Token.objects.filter(user=user).delete()
    response = api_client.get(STATUS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_deactivated_user_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    user.is_active = False
    user.save()
    assert api_client.get(STATUS).status_code == 401


def test_deleted_user_is_refused_on_the_next_request(api_client, user):
    assert api_client.get(STATUS).status_code == 200
    user.delete()
    assert api_client.get(STATUS).status_code == 401


def test_user_made_staff_may_broadcast_at_once(api_client, user):
    news = {"type": "news"}
    assert api_client.post(BROADCAST, news, format="json").status_code == 403
    user.is_staff = True
    user.save()
    assert api_client.post(BROADCAST, news, format="json").status_code == 201


def test_cached_token_needs_no_database(api_client, monkeypatch):
    assert api_client.get(STATUS).status_code == 200

    def no_database(*args, **kwargs):
        raise AssertionError("the token was read from the database again")

    monkeypatch.setattr(
        "rest_framework.authentication.TokenAuthentication.authenticate_credentials",
        no_database,
    )
    assert api_client.get(STATUS).status_code == 200


def test_change_without_signal_is_seen_after_one_heartbeat_interval(
    api_client, user, monkeypatch, django_user_model, sync_config
):
    sync_config(HEARTBEAT_INTERVAL=5)
    clock = FakeClock()
    monkeypatch.setattr(TokenCache, "timer", clock)
    assert api_client.get(STATUS).status_code == 200
    django_user_model.objects.filter(pk=user.pk).update(is_active=False)
    clock.advance(4)
    assert api_client.get(STATUS).status_code == 200  # within the interval: cached
    clock.advance(1)
    assert api_client.get(STATUS).status_code == 401


# No thread hop ----------------------------------------------------------------


async def test_cached_token_poll_takes_no_thread(api_app, user, thread_hops):
    token = await token_of(user)
    assert (await call(api_app, "GET", POLL, token=token)).status == 200
    thread_hops.clear()
    for path in (POLL, STATUS):
        assert (await call(api_app, "GET", path, token=token)).status == 200
    send = await call(api_app, "POST", SEND, token=token, data={"type": "chat"})
    assert send.status == 201
    assert thread_hops == []


async def test_refusals_take_no_thread(api_app, user, thread_hops):
    token = await token_of(user)
    await call(api_app, "GET", POLL, token=token)
    thread_hops.clear()
    assert_error(await call(api_app, "GET", "/api/nope"), 401, "not_authenticated")
    assert_error(await call(api_app, "GET", "/api/nope", token=token), 404, "not_found")
    wrong_method = await call(api_app, "POST", POLL, token=token)
    assert_error(wrong_method, 405, "method_not_allowed")
    assert_error(
        await call(api_app, "POST", BROADCAST, token=token, data={"type": "x"}),
        403,
        "permission_denied",
    )
    assert thread_hops == []


async def test_waiting_long_polls_hold_no_thread(api_app, user, sync_config):
    sync_config(POLL_MAX_WAITING_PER_USER=WAITING_POLLS)
    token = await token_of(user)
    assert (await call(api_app, "GET", POLL, token=token)).status == 200
    before = threading.active_count()
    polls = [
        request(api_app, "GET", f"{POLL}?wait=20", token=token)
        for _ in range(WAITING_POLLS)
    ]
    answers = [asyncio.ensure_future(answer(poll, timeout=30)) for poll in polls]
    await until(
        lambda: get_realtime_sync().waiting_polls.count(str(user.pk)) == WAITING_POLLS
    )
    waiting = threading.active_count()
    await get_realtime_sync().apublish("note.new", {"n": 1}, user.pk)
    results = await asyncio.gather(*answers)
    print(f"threads: {before} before, {waiting} with {WAITING_POLLS} polls waiting")
    assert waiting <= before
    assert {result.status for result in results} == {200}
    assert {result.json()["count"] for result in results} == {1}


async def test_client_leaving_frees_its_long_poll_at_once(api_app, user):
    token = await token_of(user)
    poll = request(api_app, "GET", f"{POLL}?wait=20", token=token)
    await poll.send_input({"type": "http.request", "body": b""})
    await until(lambda: get_realtime_sync().waiting_polls.count(str(user.pk)) == 1)
    await poll.send_input({"type": "http.disconnect"})
    await until(
        lambda: get_realtime_sync().waiting_polls.count(str(user.pk)) == 0, timeout=1
    )
    await poll.wait(1)  # the application returned without answering
    assert await poll.receive_nothing()


# The answers keep their shape and headers -------------------------------------


async def test_answers_carry_the_stock_headers(api_app, user):
    token = await token_of(user)
    lean = await call(api_app, "GET", POLL, token=token)
    stock = await call(get_asgi_application(), "GET", POLL, token=token)
    assert lean.status == stock.status == 200
    assert lean.headers.keys() == stock.headers.keys()
    for name in ("x-frame-options", "x-content-type-options", "referrer-policy"):
        assert lean.headers[name] == stock.headers[name]
    assert int(lean.headers["content-length"]) == len(lean.body)


async def test_missing_token_is_401_with_the_token_challenge(api_app, transactional_db):
    response = await call(api_app, "GET", POLL)
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Token"


async def test_refused_requests_count_against_the_rate_limit(
    api_app, transactional_db, sync_config
):
    sync_config(RATE_LIMIT="2/1m")
    headers = [(b"authorization", b"Token not-a-real-token")]
    statuses = [
        (await call(api_app, "GET", POLL, headers=headers)).status for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    throttled = await call(api_app, "GET", POLL, headers=headers)
    assert_error(throttled, 429, "throttled")
    assert int(throttled.headers["retry-after"]) >= 1


async def test_other_paths_keep_django_handler(user):
    router = ApiRouter(get_asgi_application())
    page = await call(router, "GET", "/accounts/login/")
    assert page.status == 200
    assert b"csrfmiddlewaretoken" in page.body  # CsrfViewMiddleware ran
    assert isinstance(router.api_app, ApiHandler)


# Sessions and CSRF on the lean path --------------------------------------------


def session_cookie(user) -> str:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client.cookies["sessionid"].value


def session_headers(session_key: str, csrf: bool) -> list[tuple[bytes, bytes]]:
    cookie = f"sessionid={session_key}; csrftoken={CSRF_SECRET}"
    headers = [(b"cookie", cookie.encode())]
    if csrf:
        headers.append((b"x-csrftoken", CSRF_SECRET.encode()))
    return headers


async def test_session_poll_is_authenticated(api_app, user):
    key = await sync_to_async(session_cookie)(user)
    headers = session_headers(key, csrf=False)
    response = await call(api_app, "GET", POLL, headers=headers)
    assert response.status == 200, response.body
    assert "cookie" in response.headers["vary"].lower()


async def test_session_post_needs_its_csrf_token(api_app, user):
    key = await sync_to_async(session_cookie)(user)
    message = {"type": "chat", "payload": {"text": "hi"}}
    refused = await call(
        api_app, "POST", SEND, data=message, headers=session_headers(key, csrf=False)
    )
    assert_error(refused, 403, "csrf_failed")
    accepted = await call(
        api_app, "POST", SEND, data=message, headers=session_headers(key, csrf=True)
    )
    assert accepted.status == 201, accepted.body
    polled = await call(api_app, "GET", POLL, headers=session_headers(key, False))
    assert [m["payload"] for m in polled.json()["messages"]] == [{"text": "hi"}]


async def test_unknown_session_is_anonymous(api_app, transactional_db):
    headers = session_headers("x" * 32, csrf=False)
    response = await call(api_app, "GET", POLL, headers=headers)
    assert_error(response, 401, "not_authenticated")


# Send, status and broadcast ------------------------------------------------------


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
    await asyncio.sleep(0.05)
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


# Rate limit counters and database settings --------------------------------------


@pytest.mark.redis
async def test_rate_limit_in_redis_counts_in_a_worker_thread(
    settings, redis_url, monkeypatch
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"sync-test-{uuid.uuid4().hex[:12]}",
        }
    }
    threads = []
    increment = ratelimit._increment

    def recorded(key, timeout):
        threads.append(threading.get_ident())
        return increment(key, timeout)

    monkeypatch.setattr(ratelimit, "_increment", recorded)
    rate = parse_rate("5/1m")
    counts = [(await ratelimit.ahit_shared("ip:1", rate, now=60.0)).count for _ in "ab"]
    assert counts == [1, 2]
    assert threads
    assert threading.get_ident() not in threads


async def test_rate_limit_in_process_counts_inline(monkeypatch):
    threads = []
    hit = ratelimit.CounterTable.hit

    def recorded(table, *args, **kwargs):
        threads.append(threading.get_ident())
        return hit(table, *args, **kwargs)

    monkeypatch.setattr(ratelimit.CounterTable, "hit", recorded)
    rate = parse_rate("5/1m")
    counts = [(await ratelimit.ahit_shared("ip:1", rate, now=60.0)).count for _ in "ab"]
    assert counts == [1, 2]
    assert threads == [threading.get_ident()] * 2  # on the event loop's thread


@pytest.mark.parametrize(
    ("url", "max_age", "health_checks"),
    [("sqlite:////tmp/x.sqlite3", 0, False), ("postgres://u:p@db.invalid/x", 60, True)],
)
def test_database_connections_are_kept_only_for_a_server_database(
    url, max_age, health_checks
):
    code = (
        "import django, os; django.setup(); from django.conf import settings; "
        "db = settings.DATABASES['default']; "
        "print(db['CONN_MAX_AGE'], db['CONN_HEALTH_CHECKS'])"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": url,
    }
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert output == [str(max_age), str(health_checks)]


def test_every_user_model_signal_reaches_the_cache(user):
    assert api_status(user) == 200
    get_user_model().objects.get(pk=user.pk).save()
    assert len(token_cache()) == 0


def api_status(user) -> int:
    client = Client()
    token, _ = Token.objects.get_or_create(user=user)
    return client.get(STATUS, HTTP_AUTHORIZATION=f"Token {token.key}").status_code
