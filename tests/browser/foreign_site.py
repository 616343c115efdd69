"""A single-page app served from another origin (another port), in a thread.

It serves one page, foreign_page.html, which loads the committed client
module from the sync server and connects with a token; the test passes the
sync server's address (and the credentials) in the URL's fragment.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from harness.live_server import HOST

PAGE = (Path(__file__).parent / "foreign_page.html").read_bytes()


class PageHandler(BaseHTTPRequestHandler):
    """``GET /`` answers the page; anything else is 404."""

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args) -> None:
        """Quiet: pytest output is no place for an access log."""


@dataclass
class ForeignSite:
    """Where the foreign app is served."""

    port: int

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    def page_url(self, **settings: str) -> str:
        """The page, told `settings` (api, user, password, token) in its fragment."""
        return f"{self.origin}/#{urlencode(settings)}"


@contextlib.contextmanager
def serve_foreign_site() -> Iterator[ForeignSite]:
    """Serve the page on a free port until the block ends."""
    server = ThreadingHTTPServer((HOST, 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ForeignSite(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
