"""The WebSocket handshake (sync/ws/middleware.py): the Origin check, auth, the
switch (SPEC §5).

The Origin matrix runs against `OriginCheck` around an application that
accepts every socket, so each case says only "admitted" or "refused"; the
issue's own probes, and token authentication, go through the real ASGI stack.
"""

from __future__ import annotations

import logging

import pytest
from channels.auth import AuthMiddlewareStack
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token

from config.asgi import application
from sync.ws.middleware import OriginCheck, TokenAuthMiddleware
from tests.conftest import PASSWORD
from tests.sync.ws.sockets import (
    assert_established,
    handshake,
    websocket_stats,
    with_extras,
)

PROXY_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Channels' WebsocketDenier closes stale database connections on every event.
pytestmark = pytest.mark.django_db(transaction=True)


async def accept_every_socket(scope, receive, send):
    """The application behind the check: admits whatever reaches it."""
    await receive()
    await send({"type": "websocket.accept"})


def with_scope(app, **extra):
    """`app` seeing `extra` in its scope (WebsocketCommunicator sets no scheme)."""

    async def wrapped(scope, receive, send):
        return await app({**scope, **extra}, receive, send)

    return wrapped


async def admitted(headers, *, scheme="ws", server=None) -> bool:
    """Whether a handshake with `headers` gets past the Origin check."""
    extra = {"scheme": scheme, **({"server": server} if server else {})}
    app = with_scope(OriginCheck(accept_every_socket), **extra)
    communicator = WebsocketCommunicator(app, "/ws", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


def request(host: str | None, origin: str | None, *more) -> list[tuple[bytes, bytes]]:
    """Handshake headers: Host and Origin when given, then `more` pairs."""
    headers = [(b"host", host.encode())] if host else []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers + [(name.encode(), value.encode()) for name, value in more]


# Same site: scheme, port and an allowed host ---------------------------------------


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        pytest.param("localhost", "http://localhost", id="default-port"),
        pytest.param("localhost", "http://localhost:80", id="explicit-default-port"),
        pytest.param("127.0.0.1:5000", "http://127.0.0.1:5000", id="explicit-port"),
        pytest.param(
            "localhost:5000", "http://127.0.0.1:5000", id="other-allowed-host"
        ),
        pytest.param("localhost:5000", None, id="no-origin"),
    ],
)
async def test_an_origin_of_this_site_is_admitted(host, origin):
    assert await admitted(request(host, origin))


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        pytest.param("127.0.0.1:5000", "http://127.0.0.1:9999", id="other-port"),
        pytest.param("localhost", "https://localhost", id="other-scheme"),
        pytest.param("localhost", "http://localhost:8000", id="port-on-default"),
        pytest.param("localhost:5000", "http://localhost", id="default-on-port"),
        pytest.param("localhost", "http://evil.com", id="foreign-host"),
        pytest.param("localhost", "http://localhost.evil.com", id="suffix-host"),
        pytest.param("localhost", "null", id="null"),
        pytest.param("localhost", "http://localhost/path", id="with-path"),
        pytest.param("localhost", "http://user@localhost", id="with-credentials"),
        pytest.param("localhost", "ftp://localhost", id="not-web"),
        pytest.param("localhost", "http://[::1", id="malformed"),
    ],
)
async def test_an_origin_of_another_site_is_refused(host, origin):
    assert not await admitted(request(host, origin))


async def test_without_a_host_header_the_server_port_counts():
    server = ("127.0.0.1", 5000)

    assert await admitted(request(None, "http://localhost:5000"), server=server)
    assert not await admitted(request(None, "http://localhost:5001"), server=server)


async def test_when_the_port_is_unknown_only_listed_origins_pass(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["http://localhost"]

    assert not await admitted(request(None, "http://127.0.0.1"))
    assert await admitted(request(None, "http://localhost"))


async def test_a_secure_socket_wants_an_https_origin():
    assert await admitted(request("localhost", "https://localhost"), scheme="wss")
    assert not await admitted(request("localhost", "http://localhost"), scheme="wss")


async def test_debug_without_allowed_hosts_admits_localhost_only(settings):
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    assert await admitted(request("localhost:5000", "http://localhost:5000"))
    assert not await admitted(request("example.com", "http://example.com"))

    settings.DEBUG = False
    assert not await admitted(request("localhost:5000", "http://localhost:5000"))


# Behind a TLS-terminating proxy ----------------------------------------------------


async def test_forwarded_proto_counts_when_the_proxy_header_is_configured(settings):
    settings.SECURE_PROXY_SSL_HEADER = PROXY_HEADER
    settings.ALLOWED_HOSTS = ["sync.example.com"]
    forwarded = ("x-forwarded-proto", "https")

    assert await admitted(
        request("sync.example.com", "https://sync.example.com", forwarded)
    )
    assert not await admitted(
        request("sync.example.com", "http://sync.example.com", forwarded)
    )
    plain = ("x-forwarded-proto", "http")
    assert await admitted(request("sync.example.com", "http://sync.example.com", plain))


async def test_forwarded_proto_is_ignored_without_the_proxy_header(settings):
    settings.SECURE_PROXY_SSL_HEADER = None
    forwarded = ("x-forwarded-proto", "https")

    assert not await admitted(request("localhost", "https://localhost", forwarded))
    assert await admitted(request("localhost", "http://localhost", forwarded))


async def test_forwarded_host_counts_only_when_django_uses_it(settings):
    forwarded = ("x-forwarded-host", "localhost:8443")
    headers = request("127.0.0.1:8000", "http://localhost:8443", forwarded)

    settings.USE_X_FORWARDED_HOST = False
    assert not await admitted(headers)
    settings.USE_X_FORWARDED_HOST = True
    assert await admitted(headers)


# Listed origins ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://app.example.com", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://a.b.example.org", True),
        ("https://example.org", True),  # Django's "*." matches the domain itself
        ("http://a.example.org", False),
        ("https://evil-example.org", False),
        ("https://example.org.evil.com", False),
    ],
)
async def test_csrf_trusted_origins_are_admitted(settings, origin, expected):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.example.org"]

    assert await admitted(request("localhost", origin)) is expected


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://spa.example.net", True),
        ("https://spa.example.net:444", False),
        ("http://spa.example.net", False),
        ("https://other.example.net", False),
    ],
)
async def test_cors_allowed_origins_are_admitted(sync_config, origin, expected):
    sync_config(CORS_ALLOWED_ORIGINS=["https://spa.example.net"])

    assert await admitted(request("localhost", origin)) is expected


# The probes of the issue, through the real stack -------------------------------------


async def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    assert await client.alogin(username=user.username, password=PASSWORD)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())


@pytest.mark.parametrize(
    ("host", "origin"),
    [("127.0.0.1:5000", "http://127.0.0.1:9999"), ("localhost", "https://localhost")],
)
async def test_a_logged_in_browser_on_another_origin_is_refused(user, host, origin):
    headers = [*request(host, origin), await session_cookie(user)]
    communicator = WebsocketCommunicator(application, "/ws", headers=headers)

    connected, _ = await communicator.connect()

    assert connected is False
    await communicator.disconnect()


async def test_a_logged_in_browser_on_this_site_connects(ws_connect, user):
    headers = [*request("127.0.0.1:5000", "http://127.0.0.1:5000")]

    _, first = await ws_connect(headers=[*headers, await session_cookie(user)])

    assert first["type"] == "connection.established"
    assert first["payload"]["userId"] == str(user.pk)


# Token authentication ----------------------------------------------------------------


async def token_for(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


@pytest.mark.parametrize("keyword", ["Token", "token"])
async def test_an_authorization_header_authenticates(ws_connect, user, keyword):
    header = (b"authorization", f"{keyword} {await token_for(user)}".encode())

    _, first = await ws_connect(headers=[header])

    assert first["type"] == "connection.established"
    assert first["payload"]["userId"] == str(user.pk)


@pytest.mark.parametrize("value", ["Token not-a-token", "Token", "Token a b"])
async def test_a_bad_authorization_header_closes_with_4401(
    ws_connect, transactional_db, value
):
    ws, first = await ws_connect(headers=[(b"authorization", value.encode())])

    assert first is None
    assert ws.close_frame["code"] == 4401


async def test_a_bad_token_is_not_rescued_by_a_session(ws_connect, user):
    headers = [(b"authorization", b"Token not-a-token"), await session_cookie(user)]

    ws, first = await ws_connect(headers=headers)

    assert first is None
    assert ws.close_frame["code"] == 4401


async def scope_after_auth(headers, query: str = "") -> dict:
    """The scope TokenAuthMiddleware hands to the consumer."""
    seen: dict = {}

    async def record(scope, receive, send):
        seen.update(scope)
        await accept_every_socket(scope, receive, send)

    path = "/ws" + (f"?{query}" if query else "")
    middleware = TokenAuthMiddleware(record, session_app=AuthMiddlewareStack(record))
    communicator = WebsocketCommunicator(middleware, path, headers)
    await communicator.connect()
    await communicator.disconnect()
    return seen


async def test_the_scope_names_the_token_that_authenticated(user, other_user):
    key = await token_for(user)
    other_key = await token_for(other_user)

    by_header = await scope_after_auth([(b"authorization", f"Token {key}".encode())])
    by_query = await scope_after_auth([], query=f"token={other_key}")
    both = await scope_after_auth(
        [(b"authorization", f"Token {key}".encode())], query=f"token={other_key}"
    )

    assert (by_header["user"], by_header["auth_token"]) == (user, key)
    assert (by_query["user"], by_query["auth_token"]) == (other_user, other_key)
    assert (both["user"], both["auth_token"]) == (user, key)


async def test_the_scope_has_no_token_without_token_auth(transactional_db):
    bearer = await scope_after_auth([(b"authorization", b"Bearer something")])
    invalid = await scope_after_auth([(b"authorization", b"Token not-a-token")])

    assert bearer["auth_token"] is None
    assert invalid["auth_token"] is None
    assert not invalid["user"].is_authenticated


# Through the whole stack: credentials, Origin, the switch ------------


LOCAL_ORIGIN = (b"origin", b"http://localhost:5000")
LOCAL_HOST = (b"host", b"localhost:5000")  # the request the origin must match


# Credentials ------------------------------------------------------------------


async def test_no_credentials_closes_with_4401(ws_connect, transactional_db):
    ws, first = await ws_connect()

    assert first is None
    assert ws.close_frame["code"] == 4401
    assert websocket_stats()["activeConnections"] == 0


@pytest.mark.parametrize("token", ["not-a-token", "0" * 40])
async def test_a_bad_token_closes_with_4401(ws_connect, transactional_db, token):
    ws, first = await ws_connect(query=f"token={token}")

    assert first is None
    assert ws.close_frame["code"] == 4401


async def test_the_token_of_an_inactive_user_closes_with_4401(
    ws_connect, user, django_user_model
):
    key = await token_for(user)
    await django_user_model.objects.filter(pk=user.pk).aupdate(is_active=False)

    ws, first = await ws_connect(query=f"token={key}")

    assert first is None
    assert ws.close_frame["code"] == 4401


async def test_a_token_in_the_query_authenticates(ws_connect, user):
    key = await token_for(user)

    _, first = await ws_connect(query=f"token={key}")

    assert_established(first, user, recovered=None)


async def test_a_session_cookie_authenticates(ws_connect, user):
    client = Client()
    assert await client.alogin(username=user.username, password=PASSWORD)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())

    _, first = await ws_connect(headers=[cookie, LOCAL_HOST, LOCAL_ORIGIN])

    assert_established(first, user, recovered=None)


async def test_an_unknown_session_cookie_closes_with_4401(ws_connect, transactional_db):
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}=nosuchsession".encode())

    ws, first = await ws_connect(headers=[cookie])

    assert first is None
    assert ws.close_frame["code"] == 4401


# Handshake: Origin and the WebSocket switch ---------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.com",
        b"http://localhost.evil.com",
        b"https://evil.com/http://localhost",
        b"null",
        b"http://[::1",
    ],
)
async def test_a_foreign_origin_is_refused_at_the_handshake(user, origin):
    connected, ws = await handshake(
        f"token={await token_for(user)}", headers=[(b"origin", origin)]
    )

    assert connected is False
    assert websocket_stats()["totalConnections"] == 0
    await ws.disconnect()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([LOCAL_HOST, LOCAL_ORIGIN], id="localhost"),
        pytest.param(
            [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
            id="loopback",
        ),
        pytest.param([], id="no-origin"),
    ],
)
async def test_a_matching_or_missing_origin_is_admitted(ws_connect, user, headers):
    _, first = await ws_connect(user, headers=headers)

    assert_established(first, user, recovered=None)


async def test_websocket_disabled_refuses_every_handshake(user, sync_config):
    sync_config(WEBSOCKET_ENABLED=False)
    query = f"token={await token_for(user)}"

    for path, headers in [("/ws", []), ("/ws/", [LOCAL_HOST, LOCAL_ORIGIN])]:
        connected, ws = await handshake(query, headers=headers, path=path)
        assert connected is False
        await ws.disconnect()
    assert websocket_stats()["totalConnections"] == 0


# What a refused handshake logs ------------------------------------------------


async def test_a_foreign_origin_is_logged_when_refused(user, caplog):
    caplog.set_level(logging.INFO)
    communicator = WebsocketCommunicator(
        application,
        "/ws",
        headers=[(b"origin", b"https://evil.example"), (b"host", b"localhost")],
    )

    connected, _ = await communicator.connect()

    [refusal] = with_extras(caplog, "websocket refused")
    assert connected is False
    assert (refusal.code, refusal.reason) == (403, "origin")
    assert refusal.origin == "https://evil.example"
