"""Two fixes to daphne that SPEC §5's close codes depend on.

1. daphne closes sockets through autobahn's ``sendClose``, which accepts only
   1000 and 3000-4999 from applications. RFC 6455 lets a server close with
   1001 (going away, on shutdown) and 1009 (message too big), and clients rely
   on them to reconnect or to shrink frames. For those two codes we write the
   close frame with autobahn's lower-level ``sendCloseFrame``, which makes the
   same state change without the check.
2. On SIGTERM, ``Server.kill_all_applications`` reads
   ``details["application_instance"]`` of every connection, but an HTTP
   connection kept alive after its response has none. The KeyError aborts the
   shutdown hook, so no application is cancelled: sockets never get their
   1001 close and the interpreter then crashes finalizing pending coroutines.
   We skip connections without an application, and also finish the tasks
   Django's HTTP handler leaves behind when cancelled (a long poll's view).

Both are applied when config.asgi is imported inside a daphne process.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)

PROTOCOL_CLOSE_CODES = frozenset({1001, 1009})


def patch_daphne() -> None:
    """Apply both fixes once, if daphne is installed."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return
    if getattr(Server, "_sync_patched", False):
        return
    _allow_protocol_close_codes(WebSocketProtocol)
    Server.kill_all_applications = _kill_all_applications
    Server._sync_patched = True


def _allow_protocol_close_codes(protocol_class) -> None:
    original = protocol_class.serverClose

    def server_close(self, code=None):
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    protocol_class.serverClose = server_close


def _kill_all_applications(self):
    """daphne's shutdown hook, tolerating connections without an application."""
    from twisted.internet import defer

    pending = [
        instance
        for details in self.connections.values()
        if (instance := details.get("application_instance")) is not None
        and not instance.done()
    ]
    for instance in pending:
        instance.cancel()
    logger.info("cancelled %d application instances for shutdown", len(pending))
    return defer.Deferred.fromFuture(asyncio.ensure_future(_finish(pending)))


async def _finish(pending: list) -> None:
    """Wait for cancelled applications, then for tasks they left behind.

    Django's ASGI handler, when cancelled, leaves its inner tasks (the view,
    the disconnect listener) running; a task still pending at interpreter
    exit can crash CPython while it is finalized.
    """
    await asyncio.gather(*pending, return_exceptions=True)
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
