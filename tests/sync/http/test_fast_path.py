"""The lean HTTP path of /api/ (sync.http.fast_path): no thread where none is needed.

Requests go through ``ApiHandler`` in-process, as ASGI (the path a real
server takes), and through the test client where only the token cache is
at stake.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.core.asgi import get_asgi_application
from django.test import Client

from sync.http.fast_path import ApiHandler, ApiRouter
from sync.services import get_realtime_sync
from tests.conftest import PASSWORD
from tests.sync.http.api_calls import BROADCAST, POLL, SEND, STATUS
from tests.sync.http.asgi_calls import (
    answer,
    assert_error,
    call,
    empty_token_cache,  # noqa: F401
    request,
    token_of,
)
from tests.sync.waiting import until

CSRF_SECRET = "b" * 32  # a valid unmasked CSRF secret, as cookie and header
WAITING_POLLS = 300


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
