"""Bound request heads and bodies under daphne, where twisted reads them.

twisted reads a whole request, body included, before daphne hands it to the
application: the body goes to a temporary file (and daphne queues all of it
for the application at once), so the ASGI limit (``sync.http.body_limits``) would
come after the harm: a 300 MB POST put 600 MB in temporary files. And
twisted's idle timeout restarts with every byte, so a client sending a
header byte a second was never closed. Here daphne's HTTP channel:

- refuses a body past its route's limit (``asgi_limits.body_limit``) with
  413 as soon as its Content-Length says so, or once its chunks pass it,
  then drops what follows of it for a while before closing, as the ASGI
  limit does (``asgi_limits.LINGER_BYTES``, ``LINGER_SECONDS``);
- takes at most ``SYNC_MAX_REQUEST_HEAD_BYTES`` of head (twisted's own
  limits, 16 KiB, set to it): 431 for one long line, twisted's 400 for many;
- arms a timer whenever it waits for a head, as under uvicorn
  (``sync.ops.uvicorn_limits``): 408, or a plain close when nothing came.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from daphne.http_protocol import WebRequest
from twisted.web import http

from sync.http.body_limits import LINGER_BYTES, LINGER_SECONDS, body_limit, too_large
from sync.ops.request_heads import (
    head_limits,
    head_timed_out,
    head_too_large,
    refusal,
)

logger = logging.getLogger(__name__)


def patch_http_factory(factory_class) -> None:
    """Make `factory_class` (daphne's) build bounded channels and requests."""
    if getattr(factory_class, "_sync_bounded", False):
        return
    build_protocol = factory_class.buildProtocol

    def bounded_build_protocol(self, addr):
        protocol = build_protocol(self, addr)
        protocol.requestFactory = BoundedWebRequest
        return protocol

    factory_class.protocol = _bounded_channel_protocol
    factory_class.buildProtocol = bounded_build_protocol
    factory_class._sync_bounded = True


def _bounded_channel_protocol(factory):
    """What twisted's HTTPFactory builds per connection, on a bounded channel."""
    return http._GenericHTTPChannelProtocol(BoundedHTTPChannel())


class BoundedHTTPChannel(http.HTTPChannel):
    """twisted's HTTP/1.1 channel with head and body bounds (see above)."""

    _sync_refused = False
    _sync_head_timer = None
    _sync_linger_timer = None
    _sync_linger_bytes = 0

    def connectionMade(self):
        self._sync_limits = head_limits()
        self.totalHeadersSize = self.MAX_LENGTH = self._sync_limits.max_bytes
        super().connectionMade()
        self._arm_head_timer()

    def lineLengthExceeded(self, line):
        """One line past the limit: 431 (twisted would just close)."""
        self.refuse(head_too_large(self._sync_limits))

    def allHeadersReceived(self):
        self._cancel_head_timer()
        limit = body_limit({"path": _request_path(self._path)})
        self.requests[-1]._sync_body_limit = limit
        if limit is not None and self.length is not None and self.length > limit:
            self.refuse_body(limit)
            return  # nothing is kept of the body: rawDataReceived drops it
        super().allHeadersReceived()

    def rawDataReceived(self, data):
        if self._sync_refused:  # the rest of a refused body: dropped
            self._sync_linger_bytes += len(data)
            if self._sync_linger_bytes > LINGER_BYTES:
                self.loseConnection()
                return
        super().rawDataReceived(data)

    def allContentReceived(self):
        if self._sync_refused:  # a refused body has ended: close now
            self.loseConnection()
        else:
            super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self):
        if self._sync_refused:  # answered already: just close
            self.loseConnection()
        else:
            super()._respondToBadRequestAndDisconnect()

    def requestDone(self, request):
        if self.persistent:  # before the next head may complete, pipelined
            self._arm_head_timer()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._cancel_head_timer()
        if self._sync_linger_timer is not None and self._sync_linger_timer.active():
            self._sync_linger_timer.cancel()
        super().connectionLost(reason)

    def refuse_body(self, limit: int) -> None:
        """413 for a body over `limit`; drop the rest for a while, then close."""
        logger.info("request refused", extra={"code": 413, "reason": "body_too_large"})
        self.refuse(refusal(413, too_large(limit)), linger=True)

    def refuse(self, answer: bytes, linger: bool = False) -> None:
        """Send `answer` and close: at once, or once what follows is dropped."""
        self._sync_refused = True
        self._cancel_head_timer()
        self.transport.write(answer)
        if linger:
            self._sync_linger_timer = self.callLater(
                LINGER_SECONDS, self.loseConnection
            )
        else:
            self.loseConnection()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        # The reactor's callLater, as twisted's own timeouts use (tests swap it).
        self._sync_head_timer = self.callLater(
            self._sync_limits.timeout, self._head_timer_fired
        )

    def _cancel_head_timer(self) -> None:
        if self._sync_head_timer is not None:
            if self._sync_head_timer.active():
                self._sync_head_timer.cancel()
            self._sync_head_timer = None

    def _head_timer_fired(self) -> None:
        self._sync_head_timer = None
        if self.transport is None or self.transport.disconnecting:
            return
        if self._receivedHeaderSize or self._buffer:  # part of a head came
            self.refuse(head_timed_out(self._sync_limits))
        else:
            self.loseConnection()


class BoundedWebRequest(WebRequest):
    """daphne's request, counting a body of unknown length (chunked)."""

    _sync_body_limit: int | None = None
    _sync_body_bytes = 0

    def handleContentChunk(self, data):
        channel = self.channel
        if channel is None or channel._sync_refused:
            return
        self._sync_body_bytes += len(data)
        limit = self._sync_body_limit
        if limit is not None and self._sync_body_bytes > limit:
            channel.refuse_body(limit)
            return
        super().handleContentChunk(data)


def _request_path(target: bytes) -> str:
    """The decoded path of a request target, as daphne puts it in the scope."""
    return unquote(target.split(b"?", 1)[0].decode("latin-1"))
