"""WebSocket handshakes per client address and per user (sync.ws.handshake_limits)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from config.asgi import application
from sync.services import ratelimit
from sync.ws import middleware
from sync.ws.handshake_limits import AddressGate
from tests.conftest import FakeClock

# A whole number of hours: the tests run inside one window.
START = 3600 * 480_000.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch) -> FakeClock:
    clock = FakeClock(start=START)
    monkeypatch.setattr(ratelimit, "clock", clock)
    return clock


@pytest.fixture
def token_lookups(monkeypatch) -> list[str]:
    """Every token the middleware looked up in the database."""
    looked_up: list[str] = []
    lookup = middleware.user_for_token

    async def recorded(key):
        looked_up.append(key)
        return await lookup(key)

    monkeypatch.setattr(middleware, "user_for_token", recorded)
    return looked_up


class Handshakes:
    """Opens sockets through the real ASGI stack from a chosen client address."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []

    async def open(self, query: str = "", client: str = "198.51.100.1"):
        """(accepted, close code or None when connection.established came)."""
        communicator = WebsocketCommunicator(application, f"/ws?{query}")
        communicator.scope["client"] = (client, 50000)  # before the app runs
        self.opened.append(communicator)
        accepted, _ = await communicator.connect()
        first = await communicator.receive_output(2)
        if first["type"] == "websocket.close":
            return accepted, first["code"]
        assert json.loads(first["text"])["type"] == "connection.established"
        return accepted, None

    async def as_user(self, user, client: str = "198.51.100.1"):
        token, _ = await Token.objects.aget_or_create(user=user)
        return await self.open(f"token={token.key}", client)


@pytest.fixture
async def handshakes():
    opened = Handshakes()
    yield opened
    for communicator in opened.opened:
        await communicator.disconnect()


# Per address, before the token is looked up ---------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_bad_tokens_past_the_rate_are_refused_without_a_lookup(
    handshakes, sync_config, token_lookups
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="3/1h")
    within = [await handshakes.open(f"token=bad{n}") for n in range(3)]
    past = [await handshakes.open(f"token=bad{n}") for n in range(3, 8)]

    assert within == [(True, 4401)] * 3
    assert past == [(True, 4429)] * 5  # no HTTP response extension: 4429
    assert token_lookups == ["bad0", "bad1", "bad2"]


@pytest.mark.django_db(transaction=True)
async def test_no_credentials_count_as_failed_attempts_too(handshakes, sync_config):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="2/1h")
    outcomes = [await handshakes.open() for _ in range(3)]
    assert outcomes == [(True, 4401), (True, 4401), (True, 4429)]


@pytest.mark.django_db(transaction=True)
async def test_other_addresses_and_real_users_keep_their_own_budgets(
    handshakes, sync_config, user
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="2/1h")
    for _ in range(2):
        assert await handshakes.as_user(user, client="198.51.100.1") == (True, None)
    # Real users' handshakes spent none of the address's failed-attempt budget.
    failed = [await handshakes.open("token=bad", client="198.51.100.1") for _ in "abc"]
    assert failed == [(True, 4401), (True, 4401), (True, 4429)]
    assert await handshakes.open("token=bad", client="198.51.100.2") == (True, 4401)


@pytest.mark.django_db(transaction=True)
async def test_the_address_budget_comes_back_in_the_next_window(
    handshakes, sync_config, frozen_clock
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="1/1m")
    assert await handshakes.open("token=bad") == (True, 4401)
    assert await handshakes.open("token=bad") == (True, 4429)
    frozen_clock.advance(60)
    assert await handshakes.open("token=bad") == (True, 4401)


@pytest.mark.django_db(transaction=True)
async def test_a_refusal_flood_logs_one_line_per_window(
    handshakes, sync_config, caplog
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="1/1h")
    with caplog.at_level(logging.INFO, logger="sync"):
        for _ in range(6):
            await handshakes.open("token=bad")

    refusals = [r for r in caplog.records if r.name == "sync.ws.handshake_limits"]
    assert len(refusals) == 1
    assert refusals[0].code == 4429
    assert refusals[0].client == "198.51.100.1"


# Per user, after authentication -------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_users_handshakes_past_the_connect_rate_are_refused(
    handshakes, sync_config, user, other_user
):
    sync_config(WS_CONNECT_RATE="2/1h")
    outcomes = [await handshakes.as_user(user) for _ in range(3)]
    assert outcomes == [(True, None), (True, None), (True, 4429)]
    assert await handshakes.as_user(other_user) == (True, None)


# The answer: 429 where the server allows it, else 4429 ---------------------------


class Recorder:
    """An ASGI app and send callable that remember what they saw."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.called = False

    async def app(self, scope, receive, send) -> None:
        self.called = True

    async def send(self, message: dict) -> None:
        self.sent.append(message)


async def receive_connect() -> dict:
    return {"type": "websocket.connect"}


def scope_with_extension(**extra) -> dict:
    return {
        "type": "websocket",
        "client": ("203.0.113.5", 1),
        "headers": [],
        "extensions": {"websocket.http.response": {}},
        **extra,
    }


async def test_a_server_with_the_http_response_extension_gets_a_429(sync_config):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="1/1h")
    first, second = Recorder(), Recorder()
    await AddressGate(first.app)(scope_with_extension(), receive_connect, first.send)
    await AddressGate(second.app)(scope_with_extension(), receive_connect, second.send)

    assert first.called
    assert not second.called
    start, body = second.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"retry-after"] == b"3600"
    error = json.loads(body["body"])
    assert error["success"] is False
    assert error["error"]["code"] == "throttled"
    assert error["error"]["details"] == {"retryAfter": 3600}


async def test_without_the_extension_the_socket_is_accepted_then_closed_4429(
    sync_config,
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="1/1h")
    scope = scope_with_extension(extensions={})
    await AddressGate(Recorder().app)(dict(scope), receive_connect, Recorder().send)
    refused = Recorder()
    await AddressGate(refused.app)(dict(scope), receive_connect, refused.send)

    assert refused.sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": 4429},
    ]


@pytest.mark.django_db(transaction=True)
async def test_handshakes_go_uncounted_while_the_counters_redis_is_away(
    handshakes, sync_config, user, unreachable_redis_cache
):
    sync_config(WS_CONNECT_RATE="1/1h", WS_ANONYMOUS_CONNECT_RATE="1/1h")
    assert [await handshakes.as_user(user) for _ in "ab"] == [(True, None)] * 2
    assert [await handshakes.open("token=bad") for _ in "ab"] == [(True, 4401)] * 2


@pytest.mark.django_db(transaction=True)
async def test_bad_tokens_sent_at_once_cost_no_more_lookups_than_the_rate(
    handshakes, sync_config, token_lookups
):
    # Counted only after authentication, 30 handshakes in flight together all
    # passed a gate that saw none of the others: 30 database lookups.
    sync_config(WS_ANONYMOUS_CONNECT_RATE="3/1h")

    outcomes = await asyncio.gather(
        *(handshakes.open(f"token=bad{index}") for index in range(30))
    )

    codes = sorted(code for _, code in outcomes)
    assert codes == [4401] * 3 + [4429] * 27
    assert len(token_lookups) == 3


@pytest.mark.django_db(transaction=True)
async def test_a_known_token_passes_an_address_others_exhausted(
    handshakes, sync_config, user
):
    sync_config(WS_ANONYMOUS_CONNECT_RATE="2/1h")
    assert (await handshakes.as_user(user)) == (True, None)  # now cached
    for index in range(3):
        await handshakes.open(f"token=bad{index}")
    assert (await handshakes.open("token=bad-again"))[1] == 4429

    assert (await handshakes.as_user(user)) == (True, None)
