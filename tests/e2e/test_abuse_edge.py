"""Limits at the edge (issue 15, findings 4, 9b and 9c), against real servers.

Each test keeps the shape of the hostile probe that found the hole: huge
bodies outside the API and to ``/api`` without its slash, a huge header,
clients that send a header byte a second, a token under another spelling of
``?token=``, and a foreign ``Host``. What the server took in is measured
against a small baseline request in the same test (bytes the client managed
to send before the answer, resident memory, time); figures are printed
(``pytest -s``).

The probes speak HTTP over raw sockets (harness/raw_http.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import tempfile
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from harness.live_server import HOST, LiveServer
from harness.raw_http import (
    MIB,
    PIECE_BYTES,
    Probe,
    post,
    probe,
    request_head,
)
from tests.e2e.test_hardening import PeakMemory, call, open_connection

pytestmark = pytest.mark.e2e

# Django's DATA_UPLOAD_MAX_MEMORY_SIZE by default, and the API's own limit
# (SYNC_MAX_PAYLOAD_BYTES + 4096).
PAGE_BODY_LIMIT = 2_621_440
API_BODY_LIMIT = 65_536 + 4096
# What a refused request may still get into the server before the answer:
# the kernels' buffers on loopback (the receiving side grows its window while
# the server reads the bytes under the limit), and the server's own buffer.
IN_FLIGHT_BYTES = 8 * MIB
# The server's resident memory may grow by this much while refusing (other
# tests share the server; the allocator keeps some slack).
RSS_GROWTH_BOUND = 32 * MIB
TEMPORARY_DIR = tempfile.gettempdir()


class PeakFootprint:
    """Samples the server's resident memory and temporary files; keeps the peaks.

    Django spools a body past 2.5 MB to an unnamed temporary file, and
    twisted (daphne) any body past 100 kB: they show only among the
    process's open files.
    """

    def __init__(self, server: LiveServer, interval: float = 0.01) -> None:
        self.server = server
        self.interval = interval
        self.rss_before = server.rss_bytes()
        self.peak_rss = self.rss_before
        # A body read before may still sit in a file its request holds.
        self.spooled_before = self.spooled_bytes()
        self.peak_spooled = self.spooled_before
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    @property
    def rss_growth(self) -> int:
        """Peak resident memory over the one before."""
        return self.peak_rss - self.rss_before

    @property
    def spooled_growth(self) -> int:
        """Peak bytes in temporary files over those held before."""
        return self.peak_spooled - self.spooled_before

    def sample(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):
                self.peak_rss = max(self.peak_rss, self.server.rss_bytes())
                self.peak_spooled = max(self.peak_spooled, self.spooled_bytes())

    def spooled_bytes(self) -> int:
        """Bytes in the temporary files the server holds open right now."""
        directory = f"/proc/{self.server.process.pid}/fd"
        total = 0
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                if os.readlink(f"{directory}/{name}").startswith(TEMPORARY_DIR):
                    total += os.stat(f"{directory}/{name}").st_size
        return total

    def __enter__(self) -> PeakFootprint:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self.thread.join()


def assert_refused_as_too_large(refused: Probe, limit: int) -> None:
    assert refused.status == 413, refused.answer[:300]
    error = refused.json()
    assert error["success"] is False
    assert error["error"]["code"] == "payload_too_large"
    assert refused.sent < limit + IN_FLIGHT_BYTES


FRAMINGS = pytest.mark.parametrize(
    "chunked", [False, True], ids=["content-length", "chunked"]
)


# Bodies outside the API (finding 4) --------------------------------------------

HUGE_BODY_BYTES = 300 * MIB
SMALL_BODY_BYTES = 1000


@FRAMINGS
@pytest.mark.parametrize("path", ["/accounts/login/", "/"])
def test_a_huge_body_outside_the_api_is_refused_with_413_before_it_is_read(
    asgi_server, path, chunked
):
    server = asgi_server()
    baseline = post(server, path, SMALL_BODY_BYTES, chunked)
    with PeakFootprint(server) as footprint:
        refused = post(server, path, HUGE_BODY_BYTES, chunked)
    print(
        f"\n{server.kind} POST {path} ({'chunked' if chunked else 'length'}): "
        f"baseline {baseline.status} after {baseline.sent} B in "
        f"{baseline.seconds * 1000:.0f} ms; 300 MB offered: {refused.status} after "
        f"{refused.sent / MIB:.1f} MB in {refused.seconds * 1000:.0f} ms, "
        f"RSS +{footprint.rss_growth / MIB:.1f} MB and temporary files "
        f"{footprint.spooled_growth / MIB:.1f} MB at peak"
    )

    # A small body is read and answered by the page (no CSRF token: 403).
    assert baseline.status == 403
    assert_refused_as_too_large(refused, PAGE_BODY_LIMIT)
    assert footprint.rss_growth < RSS_GROWTH_BOUND
    assert footprint.spooled_growth <= PAGE_BODY_LIMIT
    assert server.process.poll() is None


@FRAMINGS
@pytest.mark.parametrize(
    ("path", "size"), [("/accounts/login/", 3 * MIB), ("/api", MIB)]
)
def test_a_client_that_sends_its_whole_body_before_reading_still_gets_the_413(
    asgi_server, path, size, chunked
):
    server = asgi_server()
    response = server.request(
        "POST",
        path,
        body=b"a" * size,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        chunked=chunked,
    )

    # The refused rest of the body was read and dropped, not left to a reset.
    assert response.status == 413
    assert response.json()["error"]["code"] == "payload_too_large"


# /api without its slash gets the API's limit (finding 4) -------------------------

API_PROBE_BYTES = 20 * MIB


@FRAMINGS
def test_a_body_to_api_without_its_slash_is_refused_like_one_under_api(
    asgi_server, chunked
):
    server = asgi_server()
    under_api = post(server, "/api/", API_PROBE_BYTES, chunked)
    bare_api = post(server, "/api", API_PROBE_BYTES, chunked)
    print(
        f"\n{server.kind} 20 MB ({'chunked' if chunked else 'length'}): /api/ "
        f"{under_api.status} after {under_api.sent / MIB:.2f} MB, /api "
        f"{bare_api.status} after {bare_api.sent / MIB:.2f} MB "
        f"in {bare_api.seconds * 1000:.0f} ms"
    )

    assert_refused_as_too_large(under_api, API_BODY_LIMIT)
    assert_refused_as_too_large(bare_api, API_BODY_LIMIT)


# A huge header (finding 4) --------------------------------------------------------

HUGE_HEADER_BYTES = 200 * MIB


def test_a_huge_header_is_refused_in_bounded_memory(asgi_server):
    server = asgi_server()
    baseline = probe(server, request_head("GET", "/accounts/login/", "X-Note: small"))
    head = b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: "
    pieces = itertools.repeat(b"a" * PIECE_BYTES, HUGE_HEADER_BYTES // PIECE_BYTES)
    with PeakFootprint(server) as footprint:
        refused = probe(server, head, pieces)
    growth = footprint.rss_growth
    print(
        f"\n{server.kind} 200 MB header offered: answer {refused.status} "
        f"(reset: {refused.reset}) after {refused.sent / MIB:.2f} MB in "
        f"{refused.seconds * 1000:.0f} ms; RSS +{growth / MIB:.1f} MB at peak "
        f"(baseline request: {baseline.status})"
    )

    assert baseline.status == 200
    assert refused.status in (None, 400, 431), refused.answer[:300]
    assert refused.sent < IN_FLIGHT_BYTES
    assert growth < RSS_GROWTH_BOUND
    assert server.process.poll() is None


# Slowloris (finding 4) -------------------------------------------------------------

HEAD_TIMEOUT = 2
SLOW_CLIENTS = 40
# The timeout, plus a loaded machine's delay in noticing it.
CLOSED_WITHIN = HEAD_TIMEOUT + 3.0
BYTE_INTERVAL = 1.0
SLOW_HEADS = [
    request_head("GET", "/accounts/login/", "X-Padding: " + "p" * 200),
    request_head(
        "GET",
        "/ws",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "X-Padding: " + "p" * 200,
    ),
]


async def dribble(
    server: LiveServer, head: bytes, give_up_after: float, begun: asyncio.Semaphore
) -> float:
    """Send `head` a byte at a time; seconds until the server closes (inf: never).

    `begun` is released once this client's first byte is out.
    """
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(HOST, server.port)
    started = loop.time()
    first_byte = True
    try:
        for byte in itertools.cycle(head):
            if loop.time() - started > give_up_after:
                return float("inf")
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
            if first_byte:
                first_byte = False
                begun.release()
            try:
                async with asyncio.timeout(BYTE_INTERVAL):
                    await reader.read(PIECE_BYTES)  # an answer (408) or the close
            except TimeoutError:
                continue
            except ConnectionError:
                pass
            return loop.time() - started
    finally:
        writer.close()
    return float("inf")


async def test_clients_sending_a_header_byte_a_second_are_closed_in_bounded_time(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(SYNC_REQUEST_HEAD_TIMEOUT=HEAD_TIMEOUT)
    give_up_after = CLOSED_WITHIN + 2 * BYTE_INTERVAL
    begun = asyncio.Semaphore(0)
    slow = [
        asyncio.create_task(dribble(server, SLOW_HEADS[n % 2], give_up_after, begun))
        for n in range(SLOW_CLIENTS)
    ]
    for _ in range(SLOW_CLIENTS):  # every slow client has begun
        await begun.acquire()
    started = time.monotonic()
    normal = await call(server.request, "GET", "/accounts/login/")
    normal_ms = (time.monotonic() - started) * 1000
    closed_after = await asyncio.gather(*slow)
    still_open = sum(seconds == float("inf") for seconds in closed_after)
    print(
        f"\n{server.kind}: {SLOW_CLIENTS} slow clients, head timeout {HEAD_TIMEOUT} s;"
        f" closed after {min(closed_after):.1f}-{max(closed_after):.1f} s, "
        f"{still_open} still open after {give_up_after:.0f} s; a normal request "
        f"meanwhile: {normal.status} in {normal_ms:.0f} ms"
    )

    assert normal.status == 200
    assert still_open == 0, f"{still_open} of {SLOW_CLIENTS} still connected"
    assert max(closed_after) <= CLOSED_WITHIN


# Tokens under other spellings of ?token= (finding 9b) -------------------------------

TOKEN_SPELLINGS = ["to%6Ben", "%74oken", "TOKEN", "to%6ben", "%74%6F%6B%65%6E"]
LOG_TIMEOUT = 5.0


async def wait_for_log(server: LiveServer, text: str, after: int) -> str:
    """The server's log once `text` shows after offset `after`."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while text not in (log := server.log())[after:]:
        assert time.monotonic() < deadline, f"{text!r} never logged"
        await asyncio.sleep(0.05)
    return log


async def test_a_token_under_any_spelling_of_the_parameter_never_reaches_the_log(
    asgi_server,
):
    server = asgi_server()
    token = server.tokens["alice"]
    logged_before = len(server.log())
    established = []
    for spelling in TOKEN_SPELLINGS:
        url = f"{server.ws_url}?{spelling}={token}"
        async with open_connection(url) as connection:
            try:
                first = json.loads(await connection.recv())
            except ConnectionClosed:  # not authenticated: closed with 4401
                first = {"type": "closed"}
            established.append(first["type"] == "connection.established")
        await call(server.request, "GET", f"/ws?{spelling}={token}")
        await call(server.request, "GET", f"/api/sync/poll?since=0&{spelling}={token}")
    # A last request, logged once the others are (daphne logs on completion).
    await call(server.request, "GET", "/accounts/login/?after=spellings")
    log = await wait_for_log(server, "/accounts/login/?after=spellings", logged_before)
    logged_in = dict(zip(TOKEN_SPELLINGS, established, strict=True))
    print(f"\n{server.kind}: authenticated by {logged_in}")

    # The server decodes parameter names: `to%6Ben` is `token`, and logs in.
    assert established[0] is True
    assert "/ws?" in log[logged_before:]
    assert token not in log


# A disallowed Host (finding 9c) ----------------------------------------------------

LONG_HOST = "evil-" + "x" * 3000 + ".example"
SHORT_LINE_CHARS = 400


async def test_a_disallowed_host_logs_one_short_line_without_a_traceback(
    asgi_server,
):
    server = asgi_server(ACCESS_LOG="false")
    logged_before = len(server.log())
    hosts = ["evil.com", LONG_HOST]
    answers = [
        await call(server.request, "GET", "/", headers={"Host": host}) for host in hosts
    ]
    log = await wait_for_log(server, "evil-xxxx", logged_before)
    lines = log[logged_before:].splitlines()
    print(f"\n{server.kind}: {len(lines)} lines: {[line[:160] for line in lines]}")

    assert [answer.status for answer in answers] == [400, 400]
    assert "Traceback" not in log[logged_before:]
    assert len(lines) == len(hosts)
    assert "evil.com" in lines[0]
    assert all(len(line) < SHORT_LINE_CHARS for line in lines)
    assert server.process.poll() is None


# Pipelined requests (hostile test after the fixes) -----------------------------

PIPELINED_BYTES = 4 * 2**20
# Long enough for a server that queues what it reads to show it (uvicorn
# before the fix took every byte at once); daphne reads at its own pace, and
# sending all 4 MB to it took 20 s.
SEND_SECONDS = 4.0
DRAIN_SECONDS = 5.0
SOCKET_WAIT_SECONDS = 0.25


async def test_a_pipelining_client_cannot_queue_requests_without_bound(
    dedicated_asgi_server,
):
    # One connection sending up to 4 MB of small pipelined requests while
    # reading the answers: uvicorn queued every request of every read (the
    # hostile test: 1,000,000 requests, +1.8 GB, other users' pings at 5.6 s).
    server = dedicated_asgi_server()
    request = f"GET /api HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    burst = request * (PIPELINED_BYTES // len(request))
    baseline = server.rss_bytes()

    def pipeline() -> int:
        sent = 0
        deadline = time.monotonic() + SEND_SECONDS
        with socket.create_connection((HOST, server.port)) as raw:
            raw.settimeout(SOCKET_WAIT_SECONDS)
            reader = threading.Thread(target=_drain, args=(raw,), daemon=True)
            reader.start()
            with contextlib.suppress(OSError):
                while sent < len(burst) and time.monotonic() < deadline:
                    try:
                        sent += raw.send(burst[sent : sent + 65536])
                    except TimeoutError:  # the server reads at its pace
                        continue
                raw.shutdown(socket.SHUT_WR)  # done: the server closes after
            reader.join(DRAIN_SECONDS + 1)
        return sent

    with PeakMemory(server) as memory:
        sent = await call(pipeline)
    growth = memory.peak - baseline
    after = await call(server.request, "GET", "/accounts/login/")
    print(
        f"\n{server.kind}: {sent / 2**20:.1f} MB of pipelined requests sent "
        f"in {SEND_SECONDS:.0f} s at most: RSS +{growth / 2**20:.1f} MB at peak"
    )
    assert sent > 0
    assert growth < 64 * 2**20
    assert after.status == 200


def _drain(raw: socket.socket) -> None:
    """Read answers until the server closes, for DRAIN_SECONDS at most."""
    deadline = time.monotonic() + DRAIN_SECONDS
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            try:
                if not raw.recv(65536):
                    return
            except TimeoutError:
                continue
