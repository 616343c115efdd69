"""How the bench publishes: an HTTP POST (project, socketio) or a control socket.

A trigger's ``fire(body)`` returns once the server answered, so the caller
can bound how many are in flight. Every trigger keeps its connections open.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import time
from collections import deque
from typing import Any

from websockets.asyncio.client import connect

from bench.servers import HOST

REQUEST_TIMEOUT = 60.0
# What a kept-alive connection closed by the server raises on its next use.
STALE_CONNECTION = (
    BrokenPipeError,
    ConnectionResetError,
    http.client.RemoteDisconnected,
)


class TriggerFailed(RuntimeError):
    """The server refused a publish."""


class HttpPool:
    """Keep-alive ``http.client`` connections, one per thread using them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """One request on a pooled connection; the status and body.

        A kept-alive connection the server closed while it sat idle (uvicorn
        closes them after 5 s) fails before the request is read: it is
        retried once on a new connection.
        """
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        payload = None if body is None else json.dumps(body).encode()
        connection, reused = self._take()
        try:
            return self._exchange(connection, method, path, payload, headers)
        except STALE_CONNECTION:
            if not reused:
                raise
        connection = http.client.HTTPConnection(
            HOST, self.port, timeout=REQUEST_TIMEOUT
        )
        return self._exchange(connection, method, path, payload, headers)

    def _exchange(self, connection, method, path, payload, headers):
        try:
            connection.request(method, path, payload, headers)
            answer = connection.getresponse()
            status, data = answer.status, answer.read()
        except BaseException:
            connection.close()
            raise
        self.idle.put(connection)
        return status, data

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled connection (reused: True) or a new one."""
        try:
            return self.idle.get_nowait(), True
        except queue.Empty:
            connection = http.client.HTTPConnection(
                HOST, self.port, timeout=REQUEST_TIMEOUT
            )
            return connection, False

    def close(self) -> None:
        """Close every idle connection."""
        while not self.idle.empty():
            self.idle.get_nowait().close()


class HttpTrigger:
    """POST each frame to `path`, wrapped by the target's own envelope."""

    def __init__(self, port: int, path: str, token: str | None, envelope) -> None:
        self.pool = HttpPool(port)
        self.path = path
        self.token = token
        self.envelope = envelope

    async def open(self) -> None:
        """Nothing to open: connections are made on first use."""

    async def fire(self, frame: dict, token: str | None = None) -> float:
        """Publish `frame`; the seconds the server took to answer."""
        started = time.perf_counter()
        status, body = await asyncio.to_thread(
            self.pool.request,
            "POST",
            self.path,
            self.envelope(frame),
            token or self.token,
        )
        if status >= 300:
            raise TriggerFailed(f"POST {self.path} -> {status}: {body[:200]!r}")
        return time.perf_counter() - started

    async def close(self) -> None:
        """Close the pooled connections."""
        self.pool.close()


class SocketTrigger:
    """Send each frame on the bare server's /ctl socket; it acks each, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pending: deque[asyncio.Future] = deque()

    async def open(self) -> None:
        """Connect the control socket."""
        self.ws = await connect(
            self.url, ping_interval=None, compression=None, max_queue=None
        )
        self.reader = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        async for _ in self.ws:
            self.pending.popleft().set_result(None)

    async def fire(self, frame: dict, token: str | None = None) -> float:
        """Publish `frame`; the seconds until the server acked it."""
        started = time.perf_counter()
        ack = asyncio.get_running_loop().create_future()
        self.pending.append(ack)
        await self.ws.send(json.dumps(frame, separators=(",", ":")))
        await ack
        return time.perf_counter() - started

    async def close(self) -> None:
        """Close the control socket."""
        self.reader.cancel()
        await self.ws.close()


def project_broadcast(port: int, staff_token: str) -> HttpTrigger:
    """``POST /api/sync/broadcast`` as staff, the frame as payload."""
    return HttpTrigger(
        port,
        "/api/sync/broadcast",
        staff_token,
        lambda frame: {"type": "bench.tick", "payload": frame},
    )


def project_send(port: int) -> HttpTrigger:
    """``POST /api/sync/send`` as the user whose token is given to `fire`."""
    return HttpTrigger(
        port,
        "/api/sync/send",
        None,
        lambda frame: {"type": "bench.direct", "payload": frame},
    )


def socketio_emit(port: int) -> HttpTrigger:
    """The socketio peer's ``POST /trigger``: ``sio.emit("msg", frame)``."""
    return HttpTrigger(port, "/trigger", None, lambda frame: frame)
