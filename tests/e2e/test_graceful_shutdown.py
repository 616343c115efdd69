"""A request on its way when SIGTERM lands is answered, not cut (SPEC §4-§5).

Found by the two-instance soak: uvicorn closes at once every connection with
no request under way when it starts shutting down, so a request whose bytes
were still on their way got a reset and its sender could not tell whether
it was stored. ``sync.ops.uvicorn_compat`` stops accepting first and gives such
connections a moment to deliver.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from harness.live_server import HOST

pytestmark = pytest.mark.e2e

# After SIGTERM: uvicorn sees the signal within 0.1 s; the request goes out
# after that, inside the grace that follows (0.2 s).
SEND_AFTER_SIGTERM_SECONDS = 0.15


@pytest.mark.serial  # a 0.15 s window after SIGTERM: on an idle machine
def test_a_request_arriving_as_shutdown_begins_is_answered(dedicated_asgi_server):
    server = dedicated_asgi_server()
    request = (
        f"GET /api/sync/status HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Authorization: Token {server.tokens['carol']}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, server.port), timeout=10) as connection:
        time.sleep(0.3)  # accepted, idle: no request under way yet
        server.process.send_signal(signal.SIGTERM)
        time.sleep(SEND_AFTER_SIGTERM_SECONDS)
        connection.sendall(request)
        answer = read_all(connection)

    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def read_all(connection: socket.socket) -> bytes:
    """Everything until the server closes; what came before a reset."""
    chunks = []
    try:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)
