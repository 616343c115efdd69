"""Fixtures for the real-browser tests: Debian's Chromium driven by Playwright.

The browser is the system's ``/usr/bin/chromium`` (``.ci/run`` installs the
package; Playwright never downloads one). Without it, or without the
``playwright`` package, the tests skip with the reason, unless
``SYNC_REQUIRE_BROWSER=1`` (CI) makes them fail.

Servers come from the end-to-end harness (tests/e2e/conftest.py,
harness/live_server.py), on uvicorn only: the browser tests check the
page and the client, the e2e tests already cover both ASGI servers.
Every test leaves a screenshot of each page it opened under
``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from harness.live_server import PROJECT_ROOT, LiveServer
from tests.browser.dashboard import Dashboard
from tests.browser.foreign_site import ForeignSite, serve_foreign_site
from tests.browser.support import playwright_api, skip_or_fail
from tests.e2e import conftest as e2e

# The end-to-end fixtures, here with the uvicorn-only `server_kind` below.
e2e_template_database = e2e.e2e_template_database
asgi_server = e2e.asgi_server
dedicated_asgi_server = e2e.dedicated_asgi_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def server_kind() -> str:
    """One ASGI server is enough here (see the module docstring)."""
    return "uvicorn"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Headless Chromium for the tests of this folder.

    Not for the whole session: between its calls Playwright's sync API leaves
    its event loop marked as running in the main thread, which would break
    every asyncio test collected after these.
    """
    sync_playwright = playwright_api().sync_playwright
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(
            "SYNC_REQUIRE_BROWSER",
            f"no Chromium at {CHROMIUM} (apt-get install chromium)",
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def redis_env() -> Iterator[dict[str, str]]:
    """REDIS_URL and a key prefix of this session's own, for servers that need
    a store outliving them or publishers in other processes."""
    url = settings.TEST_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        skip_or_fail("SYNC_REQUIRE_REDIS", f"no Redis answers at {url} ({error})")
    prefix = f"sync-browser-{uuid.uuid4().hex[:12]}"
    yield {"REDIS_URL": url, "SYNC_KEY_PREFIX": prefix}
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def foreign_sites() -> Iterator[tuple[ForeignSite, ForeignSite]]:
    """Two single-page apps on other ports: (listed, unlisted) in CORS."""
    with serve_foreign_site() as listed, serve_foreign_site() as unlisted:
        yield listed, unlisted


@pytest.fixture(scope="session")
def sync_server(asgi_server, foreign_sites) -> LiveServer:
    """The default server (in-memory store), trusting the listed foreign site."""
    listed, _ = foreign_sites
    return asgi_server(SYNC_CORS_ALLOWED_ORIGINS=listed.origin)


@pytest.fixture(scope="session")
def redis_server(asgi_server, redis_env) -> LiveServer:
    """A server on Redis, so ``server.shell(...)`` can publish to its clients."""
    return asgi_server(**redis_env)


def record_dialog(page: Any, dialog: Any) -> None:
    """Note an ``alert``/``confirm``/``prompt`` the page opened; dismiss it."""
    page.dialogs.append(dialog.message)
    dialog.dismiss()


def artifact_name(node_id: str) -> str:
    """A file name for a test's screenshots, from its node id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_id.split("::", 1)[-1])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Photograph every page the test opened, as it ended (passed or not),
    before teardown stops its servers."""
    try:
        return (yield)
    finally:
        photograph(item)


def photograph(item) -> None:
    """A full-page screenshot of each page of `item` in ARTIFACTS."""
    pages = getattr(item, "browser_pages", [])
    if pages:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = artifact_name(item.nodeid)
    for number, page in enumerate(pages, 1):
        with contextlib.suppress(Exception):  # a crashed page has no picture
            page.screenshot(path=ARTIFACTS / f"{name}-{number}.png", full_page=True)


@pytest.fixture
def open_page(request, browser) -> Iterator[Callable[..., Any]]:
    """Factory: ``open_page(url)`` -> a Playwright page in a fresh context.

    ``cookies`` are set first. Dialogs (``alert``…) are recorded in
    ``page.dialogs`` and dismissed, uncaught errors in ``page.errors``. Each
    page is photographed when the test ends, then its context is closed.
    """
    opened: list[Any] = []
    request.node.browser_pages = opened

    def open_(url: str, cookies: list[dict] | None = None) -> Any:
        context = browser.new_context()
        if cookies:
            context.add_cookies(cookies)
        page = context.new_page()
        page.dialogs = []
        page.errors = []
        page.on("dialog", lambda dialog: record_dialog(page, dialog))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        opened.append(page)
        page.goto(url)
        return page

    yield open_
    for page in opened:
        page.context.close()


@pytest.fixture(scope="session")
def session_cookies() -> dict[tuple[str, str], str]:
    """Logins made so far, by (server database, user): like tabs of one browser,
    pages of a user share a session (and the tests skip a password hash)."""
    return {}


@pytest.fixture
def open_dashboard(open_page, session_cookies) -> Iterator[Callable[..., Dashboard]]:
    """Factory: ``open_dashboard(server, "alice")`` -> the dashboard, logged in.

    The session cookie comes from the real login form (``session_cookie``).
    ``query`` is appended to ``/``. At the end,
    no dashboard may have thrown an uncaught error.
    """
    dashboards: list[Dashboard] = []

    def open_(server: LiveServer, user: str, query: str = "") -> Dashboard:
        key = (str(server.database), user)
        if key not in session_cookies:
            session_cookies[key] = server.session_cookie(user)
        name, value = session_cookies[key].split("=", 1)
        cookie = {"name": name, "value": value, "url": server.url}
        page = open_page(f"{server.url}/{query}", cookies=[cookie])
        dashboards.append(Dashboard(page, server, user))
        return dashboards[-1]

    yield open_
    for dashboard in dashboards:
        assert dashboard.page.errors == [], f"{dashboard.user}'s page threw errors"
