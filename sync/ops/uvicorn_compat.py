"""A clean shutdown under uvicorn, as SPEC §4-§5 ask, applied from config.asgi.

uvicorn's own shutdown closes sockets with 1012 and waits for requests in
flight, so a waiting long poll would hold the process for up to
``SYNC_POLL_MAX_WAIT``. Before it starts, we tell the service layer to shut
down: every socket is closed with 1001 (clients reconnect elsewhere and
resume by cursor) and waiting long polls answer at once, empty. uvicorn then
lets the rest of the requests in flight finish, as it always does.

The hook wraps ``Server.shutdown``, which uvicorn looks up when the signal
has been seen; its signal handlers are bound before the application loads.

Also: uvicorn's access log writes the query string, so ``?token=`` values are
redacted from it; request heads are bounded in size and time
(``sync.ops.uvicorn_limits``). And its websockets-sansio protocol, once the
application has answered a handshake with an HTTP status (the
``websocket.http.response`` extension: a refused handshake gets 429), logs
"ASGI callable returned without completing handshake." as an error: it never
marks that handshake complete (its wsproto protocol does). We mark it once
the answer is sent.
"""

from __future__ import annotations

import asyncio
import logging

from sync.ops.logging import RedactTokens
from sync.ops.uvicorn_limits import patch_http_protocol
from sync.services import lifecycle

# Seconds between refusing new connections and closing idle ones on shutdown
# (also lets the 1001 close frames go out first).
ARRIVING_REQUEST_GRACE_SECONDS = 0.2


def patch_uvicorn() -> None:
    """Wrap uvicorn's Server.shutdown once, if uvicorn is installed."""
    try:
        from uvicorn.server import Server
    except ImportError:
        return
    if getattr(Server, "_sync_patched", False):
        return
    original = Server.shutdown

    async def shutdown(self, sockets=None):
        lifecycle.begin_shutdown()
        # Stop accepting, then give connections accepted a moment ago time to
        # deliver their request: uvicorn closes at once a connection with no
        # request under way, which would cut one already on its way (a send
        # whose sender could not tell whether it was stored).
        for server in self.servers:
            server.close()
        await asyncio.sleep(ARRIVING_REQUEST_GRACE_SECONDS)
        await original(self, sockets=sockets)

    Server.shutdown = shutdown
    Server._sync_patched = True
    _complete_answered_handshakes()
    _bound_request_heads()
    # The access log, and the "WebSocket /ws?token=…" [accepted] lines.
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())


def _complete_answered_handshakes() -> None:
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        return
    original = WebSocketsSansIOProtocol.send

    async def send(self, message):
        await original(self, message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            self.handshake_complete = True

    WebSocketsSansIOProtocol.send = send


def _bound_request_heads() -> None:
    """Patch the httptools protocol, the one config/servers.py runs."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return
    patch_http_protocol(HttpToolsProtocol)
