"""The demo dashboard as a user sees it: what it shows, and its forms."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from harness.live_server import LiveServer
from tests.browser.support import playwright_api

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

# Longest wait for something that should happen at once (a loaded CI machine).
SHOWN_TIMEOUT_MS = 10_000
# Longest wait for a reconnection or a change of transport.
RECONNECT_TIMEOUT_MS = 20_000


# True when the page shows this state and transport at the same moment.
SHOWS_CONNECTION = """([state, transport]) => {
  const text = (id) => document.querySelector(`[data-testid=${id}]`).textContent;
  return text("connection-state") === state && text("transport") === transport;
}"""


def expect(target: Any):
    """Playwright's ``expect``, imported when first used (see support.py)."""
    return playwright_api().expect(target)


class Dashboard:
    """One open dashboard page of `user` on `server`."""

    def __init__(self, page: Page, server: LiveServer, user: str) -> None:
        self.page = page
        self.server = server
        self.user = user

    def part(self, test_id: str) -> Locator:
        """The element marked ``data-testid=<test_id>``."""
        return self.page.get_by_test_id(test_id)

    def expect_connection(
        self, transport: str, timeout: float = RECONNECT_TIMEOUT_MS
    ) -> None:
        """Wait until the page says "connected" and `transport`, both at once."""
        self.page.wait_for_function(
            SHOWS_CONNECTION, arg=["connected", transport], timeout=timeout
        )

    def messages(self, containing: str | None = None) -> Locator:
        """The entries of the message list (those containing a text)."""
        entries = self.part("message-log").get_by_test_id("message")
        return entries if containing is None else entries.filter(has_text=containing)

    def expect_message(self, text: str, count: int = 1) -> None:
        """Wait until `text` is shown in exactly `count` message entries."""
        expect(self.messages(text)).to_have_count(count, timeout=SHOWN_TIMEOUT_MS)

    def expect_no_message(self, text: str) -> None:
        """Assert that no entry shows `text` (now)."""
        expect(self.messages(text)).to_have_count(0, timeout=0)

    def send(self, type: str, payload: dict[str, Any] | str) -> str:
        """Fill and submit the send form; return what it answered."""
        return self.submit("send-form", "send-result", type=type, payload=payload)

    def broadcast(self, type: str, payload: dict[str, Any], topics: str = "") -> str:
        """Fill and submit the staff broadcast form; return what it answered."""
        return self.submit(
            "broadcast-form",
            "broadcast-result",
            type=type,
            payload=payload,
            topics=topics,
        )

    def subscribe(self, topics: str) -> str:
        """Subscribe to `topics` with the topics form; return what it answered."""
        return self.submit("topics-form", "topics-result", "Subscribe", topics=topics)

    def submit(
        self, form_id: str, result_id: str, button: str | None = None, **fields: Any
    ) -> str:
        """Fill `fields`, press `button` (the only one if None), read the answer."""
        form = self.part(form_id)
        for name, value in fields.items():
            text = value if isinstance(value, str) else json.dumps(value)
            form.locator(f"[name={name}]").fill(text)
        result = self.part(result_id)
        result.evaluate("output => { output.textContent = '' }")
        form.get_by_role("button", name=button, exact=True).click()
        expect(result).not_to_be_empty(timeout=SHOWN_TIMEOUT_MS)
        return result.inner_text()
