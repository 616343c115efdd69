"""Bound request heads under uvicorn (httptools): their size and their time.

httptools keeps every byte of an unfinished head, and uvicorn arms no timer
while it waits for one: a 200 MB header raised a server's memory by 250 MB,
and clients sending a header byte a second stayed connected as long as they
liked. Here each connection counts the bytes it receives while a head is
unfinished and answers 431 past ``SYNC_MAX_REQUEST_HEAD_BYTES``; and a head
must be complete within ``SYNC_REQUEST_HEAD_TIMEOUT`` of the connection
opening, or of the read that began it, else the answer is 408 (a connection
that sent nothing is just closed). Between requests, uvicorn's keep-alive
timeout closes an idle connection first. A WebSocket handshake is a request
head like any other until it is complete.

Pipelined requests are bounded too: uvicorn queues every request head that
arrives while one is being answered, and one read may hold thousands of
small ones (one connection queued 200,000 requests, 450 MB, without reading
an answer). Past ``MAX_PIPELINED_REQUESTS`` waiting, the connection gets
400 and is closed; no browser pipelines at all.

The cost per read is a comparison and an addition. A timer is armed once
per connection, and again only for a head that does not arrive in one read:
nothing per request on a kept-alive connection. uvicorn's h11 protocol is
not patched: the command line in config/servers.py runs httptools.
"""

from __future__ import annotations

from sync.ops.request_heads import head_limits, head_timed_out, head_too_large

# Requests of one connection waiting behind the one being answered.
MAX_PIPELINED_REQUESTS = 16


class PipelineTooLong(Exception):
    """Raised from the parser's callback: uvicorn answers 400 and closes."""


def patch_http_protocol(protocol_class) -> None:
    """Wrap the connection and parser callbacks of `protocol_class`, once."""
    if getattr(protocol_class, "_sync_heads_bounded", False):
        return
    connection_made = protocol_class.connection_made
    connection_lost = protocol_class.connection_lost
    data_received = protocol_class.data_received
    on_headers_complete = protocol_class.on_headers_complete
    on_message_complete = protocol_class.on_message_complete

    def bounded_connection_made(self, transport) -> None:
        self._sync_limits = head_limits()
        self._sync_head_bytes = 0  # bytes of the unfinished head; None: none
        self._sync_head_timer = None
        connection_made(self, transport)
        _arm_head_timer(self)

    def bounded_data_received(self, data: bytes) -> None:
        received = self._sync_head_bytes
        if received is not None:
            received += len(data)
            if received > self._sync_limits.max_bytes:
                return _receive_past_limit(self, data, data_received)
            self._sync_head_bytes = received
        data_received(self, data)
        if self._sync_head_bytes and self._sync_head_timer is None:
            _arm_head_timer(self)  # a head began in this read and goes on

    def bounded_on_headers_complete(self) -> None:
        self._sync_head_bytes = None
        _cancel_head_timer(self)
        if len(self.pipeline) >= MAX_PIPELINED_REQUESTS:
            raise PipelineTooLong()  # stops the parser: 400, then the close
        on_headers_complete(self)

    def bounded_on_message_complete(self) -> None:
        self._sync_head_bytes = 0  # the next head may begin in this read
        on_message_complete(self)

    def bounded_connection_lost(self, exc) -> None:
        _cancel_head_timer(self)
        connection_lost(self, exc)

    protocol_class.connection_made = bounded_connection_made
    protocol_class.connection_lost = bounded_connection_lost
    protocol_class.data_received = bounded_data_received
    protocol_class.on_headers_complete = bounded_on_headers_complete
    protocol_class.on_message_complete = bounded_on_message_complete
    protocol_class._sync_heads_bounded = True


def _receive_past_limit(protocol, data: bytes, data_received) -> None:
    """Feed what room is left; refuse if the head is still unfinished then.

    The head may end within the room (a request and its body arriving in
    one read): the rest is then received as usual.
    """
    limit = protocol._sync_limits.max_bytes
    room = limit - protocol._sync_head_bytes
    protocol._sync_head_bytes = limit  # changes only once the head ends
    data_received(protocol, data[:room])
    transport = protocol.transport
    if transport.is_closing() or transport.get_protocol() is not protocol:
        return  # refused by uvicorn, or upgraded to WebSocket
    if protocol._sync_head_bytes == limit:
        _refuse(protocol, head_too_large(protocol._sync_limits))
    else:
        protocol.data_received(data[room:])


def _arm_head_timer(protocol) -> None:
    _cancel_head_timer(protocol)
    protocol._sync_head_timer = protocol.loop.call_later(
        protocol._sync_limits.timeout, _head_timer_fired, protocol
    )


def _cancel_head_timer(protocol) -> None:
    timer = protocol._sync_head_timer
    if timer is not None:
        timer.cancel()
        protocol._sync_head_timer = None


def _head_timer_fired(protocol) -> None:
    protocol._sync_head_timer = None
    transport = protocol.transport
    if transport.is_closing() or transport.get_protocol() is not protocol:
        return
    if protocol._sync_head_bytes:  # part of a head came: say why
        _refuse(protocol, head_timed_out(protocol._sync_limits))
    else:  # nothing came since the connection opened
        transport.close()


def _refuse(protocol, answer: bytes) -> None:
    _cancel_head_timer(protocol)
    protocol.transport.write(answer)
    protocol.transport.close()
