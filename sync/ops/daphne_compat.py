"""Fixes to daphne that SPEC §4-§5 depend on, applied from config.asgi.

1. daphne closes sockets through autobahn's ``sendClose``, which accepts only
   1000 and 3000-4999 from applications. RFC 6455 lets a server close with
   1001 (going away, on shutdown), 1009 (message too big) and 1011 (here:
   the message store is out of reach), and clients rely on them to reconnect,
   shrink frames or retry later. For those codes we write the
   close frame with autobahn's lower-level ``sendCloseFrame``, which makes the
   same state change without the check. And a 4413 (slow consumer) close sits
   behind everything the client has not read yet: autobahn would drop the TCP
   connection after one second, so the client would see a bare reset instead
   of the code telling it to resume; it gets longer to read its way there.
2. A clean shutdown. daphne's ``kill_all_applications`` cancels every
   application at once (HTTP requests in flight get no answer at all, so a
   caller cannot tell whether its send was stored) and aborts with a KeyError
   on a kept-alive HTTP connection. Ours tells the service layer to shut down
   (waiting long polls answer at once), closes sockets with 1001, lets HTTP
   requests finish within a grace period, then finishes what is left behind.
   It stops listening first, so a request is either refused at connect (the
   caller knows to retry) or answered, never cut.
3. Unsent bytes per socket: twisted buffers whatever is written without
   limit. We publish the transport's backlog to the application as the ASGI
   extension ``sync.transport_backlog`` so the outbox can bound it (4413).
4. No token in the access log: ``?token=`` is redacted from logged paths,
   and the access log goes through logging (``daphne.access``), in the
   configured format, instead of straight to stdout.
5. Request heads bounded in size and time, and bodies refused before twisted
   reads them (``sync.ops.daphne_limits``).
"""

from __future__ import annotations

import asyncio
import logging

from sync.core.protocol import CloseCode
from sync.ops.logging import LogStream, redact_tokens
from sync.services import lifecycle

logger = logging.getLogger(__name__)

PROTOCOL_CLOSE_CODES = frozenset(
    {CloseCode.GOING_AWAY, CloseCode.TOO_BIG, CloseCode.UNAVAILABLE}
)
# Seconds a slow consumer gets to read up to its 4413 close frame; what it may
# hold meanwhile is bounded by SYNC_WS_MAX_PENDING_BYTES.
SLOW_CONSUMER_CLOSE_TIMEOUT = 30.0
# How often the shutdown looks again for requests that arrived meanwhile.
REQUEST_RESCAN_SECONDS = 0.05
# Seconds HTTP requests in flight get to finish on shutdown; long polls
# answer at once, so only slow sends or broadcasts can use it up.
REQUEST_GRACE_SECONDS = 5.0
# Seconds left to the reactor to write the last responses out.
FLUSH_SECONDS = 0.2


def patch_daphne() -> None:
    """Apply every fix once, if daphne is installed."""
    try:
        from daphne.http_protocol import HTTPFactory
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol

        from sync.ops.daphne_limits import patch_http_factory
    except ImportError:
        return
    if getattr(Server, "_sync_patched", False):
        return
    patch_http_factory(HTTPFactory)
    _allow_protocol_close_codes(WebSocketProtocol)
    _publish_transport_backlog(Server)
    _redact_logged_tokens(Server)
    Server.kill_all_applications = _kill_all_applications
    Server._sync_patched = True


def _allow_protocol_close_codes(protocol_class) -> None:
    original = protocol_class.serverClose

    def server_close(self, code=None):
        if code == CloseCode.SLOW_CONSUMER:
            self.closeHandshakeTimeout = SLOW_CONSUMER_CLOSE_TIMEOUT
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    protocol_class.serverClose = server_close


def _publish_transport_backlog(server_class) -> None:
    original = server_class.create_application

    def create_application(self, protocol, scope):
        extensions = scope.setdefault("extensions", {})
        extensions["sync.transport_backlog"] = lambda: unsent_bytes(protocol)
        return original(self, protocol, scope)

    server_class.create_application = create_application


def unsent_bytes(protocol) -> int:
    """Bytes a twisted transport holds that the peer has not taken yet."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return 0
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(
        transport, "offset", 0
    )
    return buffered + getattr(transport, "_tempDataLen", 0)


def _redact_logged_tokens(server_class) -> None:
    original = server_class.log_action

    def log_action(self, protocol, action, details):
        access_log = getattr(self.action_logger, "stream", None)
        if access_log is not None and not isinstance(access_log, LogStream):
            self.action_logger.stream = LogStream("daphne.access")
        path = details.get("path")
        if isinstance(path, str):
            details = {**details, "path": redact_tokens(path)}
        return original(self, protocol, action, details)

    server_class.log_action = log_action


def _kill_all_applications(self):
    """daphne's shutdown hook: stop listening, answer what is in flight, stop."""
    from twisted.internet import defer

    _stop_listening()
    lifecycle.begin_shutdown()  # long polls answer; the hub closes sockets 1001
    sockets = _instances(self, websocket=True)
    for instance in sockets:
        instance.cancel()  # the consumer closes with 1001 if it has not yet
    logger.info(
        "shutting down",
        extra={
            "sockets": len(sockets),
            "requests_in_flight": len(_instances(self, websocket=False)),
        },
    )
    return defer.Deferred.fromFuture(asyncio.ensure_future(_finish(self, sockets)))


def _stop_listening() -> None:
    """Close every listening port: new connections are refused from now on."""
    from twisted.internet import reactor, tcp

    for reader in reactor.getReaders():
        if isinstance(reader, tcp.Port):
            reader.stopListening()


def _instances(server, *, websocket: bool) -> list:
    """Running application instances of sockets, or of HTTP requests."""
    from daphne.ws_protocol import WebSocketProtocol

    return [
        instance
        for protocol, details in list(server.connections.items())
        if (instance := details.get("application_instance")) is not None
        and not instance.done()
        and isinstance(protocol, WebSocketProtocol) == websocket
    ]


async def _finish(server, sockets: list) -> None:
    """Wait for sockets and requests, then for tasks they left behind.

    Requests are looked for again until none is left (a kept-alive
    connection may send one more), for at most the grace period. Django's
    ASGI handler, when cancelled, leaves its inner tasks (the view, the
    disconnect listener) running; a task still pending at interpreter exit
    can crash CPython while it is finalized.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REQUEST_GRACE_SECONDS
    while (requests := _instances(server, websocket=False)) and (
        loop.time() < deadline
    ):
        await asyncio.wait(requests, timeout=REQUEST_RESCAN_SECONDS)
    for instance in _instances(server, websocket=False):
        instance.cancel()
    await asyncio.gather(*sockets, return_exceptions=True)
    await asyncio.sleep(FLUSH_SECONDS)
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
