"""Raw HTTP/1.1 requests for the abuse probes: what was sent, and the answer.

A client library would buffer a whole body first, or stop at the first
refused byte without saying how far it got. ``probe`` sends a head, then a
body piece by piece, stops sending as soon as the server answers (a refused
client would), and reports how many bytes it got out before that.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from harness.live_server import HOST, LiveServer

MIB = 2**20
PIECE_BYTES = 64 * 1024
# Asked of the kernel before connecting: the client's own buffer then holds
# little, and what it "sent" is close to what reached the server.
SEND_BUFFER_BYTES = 64 * 1024
# Longest a probe waits for an answer (or a close) in all.
PROBE_TIMEOUT = 30.0


@dataclass
class Probe:
    """What one raw request got: the answer, and what was sent meanwhile."""

    answer: bytes
    sent: int
    seconds: float
    reset: bool = False

    @property
    def status(self) -> int | None:
        """The answer's status; None when the server closed without one."""
        if not self.answer.startswith(b"HTTP/"):
            return None
        return int(self.answer.split(b" ", 2)[1])

    def json(self) -> dict:
        """The answer's body, parsed."""
        return json.loads(self.answer.partition(b"\r\n\r\n")[2])


def answer_complete(data: bytes) -> bool:
    """True once `data` holds a whole answer (head and Content-Length body)."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def probe(server: LiveServer, head: bytes, rest: Iterable[bytes] = ()) -> Probe:
    """Send `head`, then `rest` piece by piece, until the server answers.

    Sending stops as soon as anything comes back (a refused client would), or
    when the server stops taking bytes; then the answer is read to its end,
    or until the server closes.
    """
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    connection.connect((HOST, server.port))
    connection.setblocking(False)
    pieces = itertools.chain([head], rest)
    pending, sent, answer, reset = next(pieces), 0, b"", False
    started = time.monotonic()
    deadline = started + PROBE_TIMEOUT
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            writers = [connection] if pending and not answer else []
            readable, writable, _ = select.select([connection], writers, [], remaining)
            if readable:
                try:
                    data = connection.recv(PIECE_BYTES)
                except ConnectionResetError:
                    reset = True
                    break
                answer += data
                if not data or answer_complete(answer):
                    break
            elif writable:
                try:
                    count = connection.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    pending = b""  # refused mid-body: read what came back
                    continue
                sent += count
                pending = pending[count:] or next(pieces, b"")
    finally:
        connection.close()
    return Probe(answer, sent, time.monotonic() - started, reset)


def request_head(method: str, path: str, *headers: str) -> bytes:
    """A request line and headers for this server, up to the blank line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def body_pieces(total: int, chunked: bool) -> Iterator[bytes]:
    """`total` bytes of form data in pieces, framed as chunks if `chunked`."""
    piece = b"a" * PIECE_BYTES
    count, tail = divmod(total, PIECE_BYTES)
    if not chunked:
        yield from itertools.repeat(piece, count)
        yield b"a" * tail
        return
    framed = b"%x\r\n%s\r\n" % (PIECE_BYTES, piece)
    yield from itertools.repeat(framed, count)
    if tail:
        yield b"%x\r\n%s\r\n" % (tail, b"a" * tail)
    yield b"0\r\n\r\n"


def post(server: LiveServer, path: str, size: int, chunked: bool) -> Probe:
    """POST `size` bytes of form data to `path`, framed as asked."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = request_head(
        "POST", path, "Content-Type: application/x-www-form-urlencoded", framing
    )
    return probe(server, head, body_pieces(size, chunked))
