"""The soak: steady traffic, tabs dropping and resuming, one SIGTERM and restart.

Shared by ``tests/e2e/test_soak.py`` (a short run in ``make test``) and
``bench/soak.py`` (a longer one). One publisher thread sends per-user messages
(POST /api/sync/send as alice and bob) and staff broadcasts (carol; with and
without topics), one request at a time, so the order of its acknowledgements
is the order of publication. Tabs of alice and bob (WebSocket, long polling by
cursor, long polling by ``since``) read them, drop now and then (abruptly or
cleanly), and resume from their last position after a short pause, sometimes
on the other transport. Once in the run the server is stopped with SIGTERM and
started again on the same port: the in-memory store starts a new epoch.

With several instances on one Redis (``run_soak([a, b], ...)``), every
request and every connection goes to one of them at random (a load balancer
without stickiness), several publishers send at once, and the first
instance is the one stopped and started again. The Redis store keeps its
epoch through that, so no announcement excuses any loss.

The checker then holds each tab to SPEC §3-§5: no message twice; within each
queue (a user's own, the broadcasts) publication order; every acknowledged
message the tab may see, published once it had a position, arrives, unless
the server announced loss to that tab (``recovered: false``, ``gap: true``)
for a message stored before the epoch of that announcement; nothing the tab
may not see. Every request sent gets an HTTP answer: a connection refused
before anything was sent is fine (the caller retries), a request sent and
never answered is not (the caller cannot tell whether it was stored), except
a reset while a server stops that left no trace (see
``SoakReport.unanswered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from harness.live_server import HOST, LiveServer

# Environment of a soak server: rate limits out of the way (the soak sends far
# more than 1000 requests per user in 15 minutes, and its tabs reconnect and
# send without pause), and queues long enough that only the restart can lose
# a message (an overflow would be a legitimate gap).
SOAK_ENV = {
    "SYNC_RATE_LIMIT": "1000000/1m",
    "SYNC_WS_CONNECT_RATE": "1000000/1m",
    "SYNC_WS_USER_RATE_LIMIT": "1000000/10s",
    "SYNC_QUEUE_MAX_MESSAGES": "100000",
}
USERS = ("alice", "bob")
STAFF = "carol"
BROADCAST = "broadcast"
TOPIC = "ops"
# Topic filters of the broadcasts: everyone, the tabs' topic, another one.
BROADCAST_TOPICS = ((), (TOPIC,), ("billing",), (TOPIC, "billing"))
SEND_TYPE = "soak.message"
BROADCAST_TYPE = "soak.news"
# Close codes a tab expects and resumes after: shutdown, resync, slow consumer.
RESUMABLE_CLOSE_CODES = frozenset({1001, 4409, 4413})
RETRY_SECONDS = 0.2
HTTP_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0
EXAMPLES_KEPT = 12


@dataclass(frozen=True)
class SoakConfig:
    """How long, how busy, and how restless the run is."""

    seconds: float = 16.0  # publishing and dropping phase
    settle: float = 3.0  # then every tab stays connected to catch up
    tabs: int = 12
    rate: float = 30.0  # publications per second, all queues together
    restart_at: float = 0.45  # fraction of `seconds` when SIGTERM is sent
    session: tuple[float, float] = (1.0, 3.0)  # seconds a tab stays connected
    pause: tuple[float, float] = (0.1, 0.8)  # seconds a dropped tab waits
    switch_probability: float = 0.3  # a resume changes transport
    poll_wait: float = 2.0  # long poll `wait`, seconds
    seed: int = 6
    publishers: int = 1  # sending at once; each one request at a time


@dataclass(frozen=True)
class Cluster:
    """The instances of a soak; each request or connection picks one.

    One instance: always it. Several (on one Redis): one at random, as a
    load balancer without stickiness would.
    """

    servers: tuple[LiveServer, ...]

    def pick(self, rng: random.Random) -> LiveServer:
        if len(self.servers) == 1:
            return self.servers[0]
        return rng.choice(self.servers)

    @property
    def shares_store(self) -> bool:
        """True when the store outlives an instance's restart (Redis)."""
        return all("REDIS_URL" in server.overrides for server in self.servers)


# The publisher ---------------------------------------------------------------


@dataclass
class Publication:
    """One message the publisher tried to publish, and what came of it."""

    serial: int
    queue: str  # a user name, or BROADCAST
    topics: tuple[str, ...]
    by: int = 0  # which publisher
    sent_at: float = 0.0  # monotonic, just before the request was sent
    answered_at: float = 0.0
    message_id: str | None = None
    outcome: str = "pending"  # stored, rejected <status>, unanswered <error>

    @property
    def stored(self) -> bool:
        """True once a 2xx answer said the message was stored."""
        return self.outcome == "stored"


# How a connection closed before any byte of answer (reset by the kernel
# while queued, or closed unread by a stopping server) shows up to the
# publisher (http.client) and to a tab's poll (asyncio streams).
RESET_ERRORS = ("ConnectionResetError", "RemoteDisconnected", "0 bytes, no complete")


class Refused(Exception):
    """The connection was refused: nothing was sent, the caller may retry."""


class Publisher(threading.Thread):
    """Publishes at a steady rate, one request at a time, until `stop`.

    Publisher `number` of `config.publishers` takes every n-th serial, so
    serials stay unique, and its share of the rate.
    """

    def __init__(self, cluster: Cluster, config: SoakConfig, number: int = 0) -> None:
        super().__init__(name=f"soak-publisher-{number}", daemon=True)
        self.cluster = cluster
        self.config = config
        self.number = number
        self.rng = random.Random(config.seed + 1000 * number)
        self.publications: list[Publication] = []
        self.refused = 0
        self.failure: str | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self.publish_steadily()
        except Exception as error:  # reported, so the run cannot pass quietly
            self.failure = f"publisher crashed: {error!r}"

    def publish_steadily(self) -> None:
        interval = self.config.publishers / self.config.rate
        next_at = time.monotonic()
        first = self.number + 1
        for serial in itertools.count(first, self.config.publishers):
            if self.stopping.is_set():
                return
            self.publish(self.plan(serial))
            next_at = max(next_at + interval, time.monotonic() - interval)
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Finish the request under way, then stop."""
        self.stopping.set()
        self.join(HTTP_TIMEOUT + 5)

    def plan(self, serial: int) -> Publication:
        """The next publication: a user's message or a broadcast."""
        queue = self.rng.choice((*USERS, BROADCAST))
        topics = self.rng.choice(BROADCAST_TOPICS) if queue == BROADCAST else ()
        return Publication(serial, queue, topics, self.number)

    def publish(self, publication: Publication) -> None:
        """Send until answered; a refused connection is retried, not recorded."""
        while not self.stopping.is_set():
            try:
                self.attempt(publication)
            except Refused:
                self.refused += 1
                time.sleep(RETRY_SECONDS / 4)
                continue
            self.publications.append(publication)
            return

    def attempt(self, publication: Publication) -> None:
        user, path, body = self.request_for(publication)
        server = self.cluster.pick(self.rng)
        connection = http.client.HTTPConnection(HOST, server.port, HTTP_TIMEOUT)
        try:
            try:
                connection.connect()
            except OSError as error:
                raise Refused() from error
            publication.sent_at = time.monotonic()
            self.exchange(connection, publication, (server, user), path, body)
        finally:
            connection.close()

    def exchange(self, connection, publication, sender, path, body) -> None:
        server, user = sender
        headers = {**server.auth_headers(user), "Content-Type": "application/json"}
        try:
            connection.request("POST", path, json.dumps(body), headers)
            answer = connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as error:
            publication.outcome = f"unanswered {type(error).__name__}"
            return
        publication.answered_at = time.monotonic()
        if answer.status in (200, 201):
            publication.message_id = json.loads(data)["messageId"]
            publication.outcome = "stored"
        else:
            publication.outcome = f"rejected {answer.status}"

    @staticmethod
    def request_for(publication: Publication) -> tuple[str, str, dict[str, Any]]:
        """Who sends it, to which route, with which body."""
        payload = {
            "serial": publication.serial,
            "queue": publication.queue,
            "by": publication.by,
        }
        if publication.queue != BROADCAST:
            body = {"type": SEND_TYPE, "payload": payload}
            return publication.queue, "/api/sync/send", body
        body = {"type": BROADCAST_TYPE, "payload": payload}
        body["topics"] = list(publication.topics)
        return STAFF, "/api/sync/broadcast", body


# A minimal HTTP client for tabs: cancellable, and telling refusal from silence


@dataclass
class HttpAnswer:
    """A status and parsed JSON body; status 0: refused, -1: sent, no answer."""

    status: int
    body: Any = None
    error: str = ""


async def http_get(port: int, path: str, headers: dict[str, str]) -> HttpAnswer:
    """GET `path` on its own connection (``Connection: close``)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as error:
        return HttpAnswer(0, error=type(error).__name__)
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await reader.read()
    except OSError as error:
        return HttpAnswer(-1, error=type(error).__name__)
    finally:
        writer.close()
    return parse_http_answer(raw)


def parse_http_answer(raw: bytes) -> HttpAnswer:
    """Status and JSON body of a complete response; -1 if it is cut short."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        return HttpAnswer(-1, error=f"{len(raw)} bytes, no complete head")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in header_lines)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    elif len(body) < int(headers.get("content-length", len(body))):
        return HttpAnswer(-1, error="body cut short")
    try:
        return HttpAnswer(int(status_line.split()[1]), json.loads(body))
    except ValueError:
        return HttpAnswer(int(status_line.split()[1]), body)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (trailers ignored)."""
    data = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return data
        data, body = data + rest[:size], rest[size + 2 :]
    return data


# Tabs --------------------------------------------------------------------------


@dataclass
class Receipt:
    """A message as one tab received it."""

    serial: int
    queue: str
    message_id: str
    at: float
    by: int = 0  # which publisher


@dataclass
class Announcement:
    """The server told the tab it lost messages; what the tab had by then."""

    at: float
    kind: str  # "recovered:false" or "gap:true"
    last_serials: dict[str, int]


@dataclass
class Tab:
    """One browser tab of a user: its position and everything it received."""

    name: str
    user: str
    transport: str  # "websocket", "poll" (by cursor) or "since" (by timestamp)
    topics: frozenset[str]
    rng: random.Random
    token: str = ""
    steady: bool = False
    cursor: str | None = None
    since: int | None = None
    ready_at: float | None = None  # when it first had a position
    receipts: list[Receipt] = field(default_factory=list)
    announcements: list[Announcement] = field(default_factory=list)
    last_serials: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    anomalies: list[str] = field(default_factory=list)
    unanswered: list[tuple[float, str]] = field(default_factory=list)
    refused_handshakes: list[tuple[float, int]] = field(default_factory=list)
    close_codes: Counter = field(default_factory=Counter)
    transports_used: Counter = field(default_factory=Counter)
    ports_used: Counter = field(default_factory=Counter)  # requests, connections

    def may_see(self, queue: str, topics: tuple[str, ...] | list[str]) -> bool:
        """SPEC §3: own messages, and broadcasts for everyone or its topics."""
        if queue != BROADCAST:
            return queue == self.user
        return not topics or not self.topics.isdisjoint(topics)

    def became_ready(self) -> None:
        if self.ready_at is None:
            self.ready_at = time.monotonic()

    def receive(self, message: dict[str, Any]) -> None:
        """Record one message (the checker judges it later)."""
        payload = message.get("payload") or {}
        serial, queue = payload.get("serial"), payload.get("queue")
        if not isinstance(serial, int) or queue not in (*USERS, BROADCAST):
            self.anomalies.append(f"{self.name}: unknown message {message!r:.200}")
            return
        by = payload.get("by", 0)
        receipt = Receipt(serial, queue, message["id"], time.monotonic(), by)
        self.receipts.append(receipt)
        self.last_serials[queue] = max(self.last_serials[queue], serial)

    def announce(self, kind: str) -> None:
        """The server said messages after this tab's position were lost."""
        snapshot = dict(self.last_serials)
        self.announcements.append(Announcement(time.monotonic(), kind, snapshot))

    async def run(self, cluster: Cluster, config: SoakConfig, phase_end: float):
        """Drop and resume until `phase_end`, then stay on to catch up.

        A steady tab never drops by itself: it resumes only when the server
        closes it, and what it misses after that is never replayed for it.
        """
        final_end = phase_end + config.settle
        while not self.steady and (now := time.monotonic()) < phase_end:
            duration = min(self.rng.uniform(*config.session), phase_end - now)
            abrupt = self.rng.random() < 0.5
            await self.session(cluster, config, duration, abrupt=abrupt)
            await asyncio.sleep(self.rng.uniform(*config.pause))
            self.maybe_switch(config)
        while (now := time.monotonic()) < final_end:
            await self.session(cluster, config, final_end - now, abrupt=False)
            await asyncio.sleep(RETRY_SECONDS)

    def maybe_switch(self, config: SoakConfig) -> None:
        """WebSocket and cursor polling resume on the other one, sometimes."""
        if self.transport == "since" or self.rng.random() >= config.switch_probability:
            return
        self.transport = "poll" if self.transport == "websocket" else "websocket"

    async def session(
        self, cluster: Cluster, config: SoakConfig, duration: float, abrupt: bool
    ) -> None:
        """Stay connected for `duration` seconds, then drop."""
        self.transports_used[self.transport] += 1
        deadline = time.monotonic() + duration
        if self.transport == "websocket":
            await websocket_session(self, cluster, deadline, abrupt)
        else:
            await polling_session(self, cluster, config, deadline, abrupt)


async def websocket_session(
    tab: Tab, cluster: Cluster, deadline: float, abrupt: bool
) -> None:
    """Connect (retrying while the server is down), read until `deadline`."""
    while time.monotonic() < deadline:
        server = cluster.pick(tab.rng)
        tab.ports_used[server.port] += 1
        connection = await open_websocket(tab, server)
        if connection is not None:
            # Until `deadline`, or until the server closes it (the tab then
            # resumes after its pause, like a client backing off).
            try:
                await read_websocket(tab, connection, deadline)
            finally:
                await drop_websocket(connection, abrupt)
            return
        await asyncio.sleep(RETRY_SECONDS)


async def open_websocket(tab: Tab, server) -> ClientConnection | None:
    """A connection whose ``connection.established`` was handled, or None."""
    params: dict[str, Any] = {"token": tab.token}
    if tab.cursor is not None:
        params["cursor"] = tab.cursor
    if tab.topics:
        params["topics"] = ",".join(sorted(tab.topics))
    url = f"{server.ws_url}?{urlencode(params)}"
    tried_at = time.monotonic()
    try:
        connection = await connect(
            url,
            proxy=None,
            compression=None,
            ping_interval=None,
            open_timeout=CONNECT_TIMEOUT,
            close_timeout=1,
            max_queue=None,
        )
    except InvalidStatus as refusal:  # an HTTP answer instead of the upgrade
        tab.refused_handshakes.append((tried_at, refusal.response.status_code))
        return None
    except (OSError, WebSocketException, TimeoutError, EOFError):
        return None  # down or shutting down: nothing was read, retry
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            first = json.loads(await connection.recv())
    except ConnectionClosed:
        closed_by_server(tab, connection.close_code)
        return None
    except TimeoutError:
        tab.anomalies.append(f"{tab.name}: no connection.established")
        connection.transport.abort()
        return None
    return established(tab, connection, first)


def established(tab: Tab, connection, first: dict[str, Any]):
    """Take the position from ``connection.established``; note announced loss."""
    if first.get("type") != "connection.established":
        tab.anomalies.append(f"{tab.name}: first frame {first!r:.200}")
        connection.transport.abort()
        return None
    payload = first["payload"]
    if tab.cursor is None:
        tab.cursor = payload["cursor"]
    elif payload.get("recovered") is False:
        tab.announce("recovered:false")
    tab.became_ready()
    return connection


async def read_websocket(tab: Tab, connection, deadline: float) -> None:
    """Handle frames until `deadline`, or until the server closes."""
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            async with asyncio.timeout(remaining):
                frame = json.loads(await connection.recv())
            await handle_frame(tab, connection, frame)
    except TimeoutError:
        return
    except ConnectionClosed:
        closed_by_server(tab, connection.close_code)


def closed_by_server(tab: Tab, code: int | None) -> None:
    """Count the close code; one a tab cannot simply resume after is an anomaly."""
    tab.close_codes[code] += 1
    # 1006 (no close frame) is counted and shown, not held against the server:
    # SPEC §5 asks for a code only where the ASGI server lets it choose.
    if code not in RESUMABLE_CLOSE_CODES and code != 1006:
        tab.anomalies.append(f"{tab.name}: closed with {code}")


async def handle_frame(tab: Tab, connection, frame: dict[str, Any]) -> None:
    kind = frame.get("type")
    if kind == "ping":
        await connection.send('{"type": "pong"}')
    elif kind in (SEND_TYPE, BROADCAST_TYPE):
        tab.receive(frame)
        tab.cursor = frame["cursor"]
    else:
        tab.anomalies.append(f"{tab.name}: unexpected frame {frame!r:.200}")


async def drop_websocket(connection: ClientConnection, abrupt: bool) -> None:
    """Go away as a tab does: close cleanly, or vanish without a close frame."""
    if abrupt:
        connection.transport.abort()
        return
    with contextlib.suppress(Exception):
        await connection.close()


async def polling_session(tab: Tab, cluster, config, deadline: float, abrupt: bool):
    """Long polls from the tab's position until `deadline`.

    An abrupt drop abandons the poll under way (its answer is never read);
    a clean one asks for no more than the time left.
    """
    while (remaining := deadline - time.monotonic()) > 0:
        wait = config.poll_wait if abrupt else min(config.poll_wait, remaining)
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(remaining + (0 if abrupt else HTTP_TIMEOUT)):
                server = cluster.pick(tab.rng)
                tab.ports_used[server.port] += 1
                answer = await http_get(server.port, poll_path(tab, wait), auth(tab))
        except TimeoutError:
            return  # abandoned: the tab went away with its poll
        if not handle_poll_answer(tab, answer, sent_at):
            await asyncio.sleep(RETRY_SECONDS)


def poll_path(tab: Tab, wait: float) -> str:
    """The poll URL from the tab's position: cursor, else since, else now."""
    params: dict[str, Any] = {"wait": f"{max(wait, 0.1):.1f}", "limit": 1000}
    if tab.transport == "poll" and tab.cursor is not None:
        params["cursor"] = tab.cursor
    else:
        params["since"] = (
            tab.since if tab.since is not None else int(time.time() * 1000)
        )
    if tab.topics:
        params["topics"] = ",".join(sorted(tab.topics))
    return f"/api/sync/poll?{urlencode(params)}"


def auth(tab: Tab) -> dict[str, str]:
    return {"Authorization": f"Token {tab.token}"}


def handle_poll_answer(tab: Tab, answer: HttpAnswer, sent_at: float) -> bool:
    """Take in one poll answer; False if the tab should wait before the next."""
    if answer.status == 0:
        return False  # refused: the server is down
    if answer.status == -1:
        what = f"{tab.name} poll, no answer ({answer.error})"
        tab.unanswered.append((sent_at, what))
        return False
    if answer.status != 200:
        tab.anomalies.append(f"{tab.name}: poll {answer.status} {answer.body!r:.200}")
        return False
    body = answer.body
    if body["gap"] and tab.ready_at is not None:
        tab.announce("gap:true")
    for message in body["messages"]:
        tab.receive(message)
    tab.cursor, tab.since = body["cursor"], body["timestamp"]
    tab.became_ready()
    return True


# (transport, follows TOPIC, steady) of successive tabs; users alternate.
TAB_PROFILES = (
    ("websocket", True, True),
    ("websocket", False, True),
    ("websocket", False, False),
    ("websocket", True, False),
    ("poll", False, False),
    ("poll", True, False),
    ("since", True, False),
    ("since", False, False),
    ("websocket", False, False),
    ("poll", False, False),
    ("websocket", True, False),
    ("poll", False, False),
)


def make_tabs(server: LiveServer, config: SoakConfig) -> list[Tab]:
    """Alice's and bob's tabs: a mix of transports, some following TOPIC."""
    rng = random.Random(config.seed + 1)
    tabs = []
    for number in range(config.tabs):
        user = USERS[number % len(USERS)]
        transport, follows, steady = TAB_PROFILES[number % len(TAB_PROFILES)]
        topics = frozenset({TOPIC} if follows else ())
        tab = Tab(
            f"tab{number:02d}", user, transport, topics, random.Random(rng.random())
        )
        tab.token, tab.steady = server.tokens[user], steady
        tabs.append(tab)
    return tabs


# The run -------------------------------------------------------------------------


@dataclass
class Restart:
    """When SIGTERM was sent, the old process seen gone, the new one listening."""

    signalled_at: float
    exit_status: int = 0
    clean_exit: bool = True
    # The epoch boundary: everything the old process stored was sent before
    # it; nothing the new one says can come before it.
    exited_at: float = 0.0
    listening_at: float = 0.0
    new_epoch: bool = True  # False when the store lives on (Redis)


async def restart_later(cluster: Cluster, delay: float) -> Restart:
    """SIGTERM the first server after `delay` s and start it on the same port."""
    await asyncio.sleep(delay)
    server = cluster.servers[0]
    restart = Restart(time.monotonic(), new_epoch=not cluster.shares_store)
    restart.exit_status = await asyncio.to_thread(server.stop)
    restart.clean_exit = server.exited_cleanly(restart.exit_status)
    restart.exited_at = time.monotonic()
    await asyncio.to_thread(server.restart)  # the old one is gone: starts only
    restart.listening_at = time.monotonic()
    return restart


async def run_soak(
    servers: LiveServer | Sequence[LiveServer], config: SoakConfig
) -> SoakReport:
    """Run the whole soak against `servers` (the first restarted once); check it."""
    cluster = Cluster((servers,) if isinstance(servers, LiveServer) else tuple(servers))
    tabs = make_tabs(cluster.servers[0], config)
    publishers = [Publisher(cluster, config, n) for n in range(config.publishers)]
    started = time.monotonic()
    phase_end = started + config.seconds
    runs = [asyncio.create_task(tab.run(cluster, config, phase_end)) for tab in tabs]
    restart = asyncio.create_task(
        restart_later(cluster, config.seconds * config.restart_at)
    )
    await asyncio.sleep(0.5)  # tabs take their first positions before traffic
    for publisher in publishers:
        publisher.start()
    await asyncio.sleep(max(0.0, phase_end - time.monotonic()))
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in publishers))
    restarts = [await restart]
    await asyncio.gather(*runs)
    return check(publishers, tabs, restarts, started, cluster.shares_store)


# The checker -----------------------------------------------------------------------


@dataclass
class TabResult:
    """What one tab got, against what it should have got."""

    tab: Tab
    received: int = 0
    delivered: int = 0
    excused: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    missing: int = 0
    leaked: int = 0  # messages this tab may not see (another user's, a topic's)
    examples: list[str] = field(default_factory=list)

    def note(self, example: str) -> None:
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(example)


@dataclass
class SoakReport:
    """Counts over the run, per tab and in total, and examples of violations."""

    tabs: list[TabResult]
    publications: list[Publication]
    refused: int
    timeline: Timeline
    seconds: float
    publisher_failure: str | None = None
    # The store outlived every restart (Redis): any announcement of loss is
    # then itself a violation, since nothing was lost.
    store_kept: bool = False

    @property
    def restarts(self) -> list[Restart]:
        return self.timeline.restarts

    def total(self, name: str) -> int:
        return sum(getattr(result, name) for result in self.tabs)

    @property
    def unanswered(self) -> list[str]:
        """Requests sent and never answered, by the publisher or by a tab.

        One kind is excused: a connection reset with no byte of answer while
        a server was stopping, for a request that left no trace (a poll
        changes nothing; a send's message reached no reader). The kernel
        resets connections still queued on a listening socket when it
        closes: they never reached the server, which cannot answer them.
        """
        received = {
            (r.queue, r.by, r.serial) for t in self.tabs for r in t.tab.receipts
        }
        lost = [
            (p.sent_at, f"publisher #{p.serial} to {p.queue}, {p.outcome}")
            for p in self.publications
            if p.outcome.startswith("unanswered")
            and not (
                self.cut_at_shutdown(p.sent_at, p.outcome)
                and (p.queue, p.by, p.serial) not in received
            )
        ]
        lost += [
            (sent_at, what)
            for result in self.tabs
            for sent_at, what in result.tab.unanswered
            if not self.cut_at_shutdown(sent_at, what)
        ]
        return [
            f"{what}: sent {self.timeline.around_restart(sent_at)}"
            for sent_at, what in sorted(lost)
        ]

    def cut_at_shutdown(self, sent_at: float, outcome: str) -> bool:
        """A reset with no answer, sent while a server was stopping."""
        reset = any(name in outcome for name in RESET_ERRORS)
        return reset and self.while_stopping(sent_at)

    def while_stopping(self, moment: float) -> bool:
        """Whether a server was stopping (SIGTERM sent, not yet gone) then."""
        return any(r.signalled_at <= moment <= r.exited_at for r in self.restarts)

    @property
    def anomalies(self) -> list[str]:
        """Unexpected answers: error frames, odd statuses, a failed exit, ids."""
        found = [line for r in self.tabs for line in r.tab.anomalies]
        # A 503 is a store out of reach (or a server stopping): only the
        # latter is part of the run.
        found += [
            f"publisher #{p.serial}: {p.outcome}, "
            f"sent {self.timeline.around_restart(p.sent_at)}"
            for p in self.publications
            if p.outcome.startswith("rejected")
            and not (p.outcome == "rejected 503" and self.while_stopping(p.sent_at))
        ]
        found += [
            f"{r.tab.name}: handshake answered {status} at {self.timeline.at(at)}"
            for r in self.tabs
            for at, status in r.tab.refused_handshakes
            if not (status == 503 and self.while_stopping(at))
        ]
        found += [
            f"the server exited with {r.exit_status} on SIGTERM"
            for r in self.restarts
            if not r.clean_exit
        ]
        if self.store_kept:
            found += [
                f"{r.tab.name}: {a.kind} at {self.timeline.at(a.at)}, nothing was lost"
                for r in self.tabs
                for a in r.tab.announcements
            ]
        return found + ([self.publisher_failure] if self.publisher_failure else [])

    @property
    def violations(self) -> int:
        """Everything the soak forbids, counted."""
        return (
            self.total("duplicates")
            + self.total("out_of_order")
            + self.total("missing")
            + self.total("leaked")
            + len(self.unanswered)
            + len(self.anomalies)
        )

    def summary(self) -> str:
        """One line of totals."""
        stored = sum(p.stored for p in self.publications)
        announced = sum(len(r.tab.announcements) for r in self.tabs)
        codes, ports = Counter(), Counter()
        for result in self.tabs:
            codes.update(result.tab.close_codes)
            ports.update(result.tab.ports_used)
        return (
            f"soak {self.seconds:.1f} s: published {stored} "
            f"(refused {self.refused} times while down), "
            f"delivered {self.total('delivered')}, excused {self.total('excused')} "
            f"after {announced} announcements, duplicates {self.total('duplicates')}, "
            f"missing {self.total('missing')}, out of order "
            f"{self.total('out_of_order')}, leaked {self.total('leaked')}, "
            f"unanswered {len(self.unanswered)}, anomalies {len(self.anomalies)}; "
            f"close codes {dict(codes)}; tabs' connections and polls by port "
            f"{dict(ports)}"
        )

    def table(self) -> str:
        """Per-tab rows and a total row, as fixed-width text."""
        header = f"{'tab':<6} {'user':<6} {'transports':<22} {'topics':<6}"
        header += "".join(f" {title:>{width}}" for title, width in TABLE_COLUMNS)
        rows = [header, "-" * len(header)]
        rows += [table_row(result) for result in self.tabs]
        rows.append("-" * len(header))
        totals = self.totals()
        rows.append(
            f"{'total':<6} {'':<6} {'':<22} {'':<6}"
            + "".join(f" {totals[t]:>{width}}" for t, width in TABLE_COLUMNS)
        )
        return "\n".join(rows)

    def totals(self) -> dict[str, int]:
        """Each table column summed over the tabs."""
        rows = [tab_counts(result) for result in self.tabs]
        return {title: sum(row[title] for row in rows) for title, _ in TABLE_COLUMNS}

    def problems(self) -> str:
        """Examples of each kind of violation, for an assertion message."""
        lines = [line for result in self.tabs for line in result.examples]
        lines += self.unanswered[:EXAMPLES_KEPT]
        return "\n".join(lines + self.anomalies[:EXAMPLES_KEPT])


# Columns of the per-tab table, with their widths.
TABLE_COLUMNS = (
    ("received", 8),
    ("delivered", 9),
    ("excused", 7),
    ("duplicates", 10),
    ("missing", 7),
    ("out_of_order", 12),
    ("leaked", 6),
    ("announced", 9),
    ("unanswered", 10),
)


def tab_counts(result: TabResult) -> dict[str, int]:
    """The table's figures for one tab."""
    counts = {title: getattr(result, title, 0) for title, _ in TABLE_COLUMNS}
    counts["announced"] = len(result.tab.announcements)
    counts["unanswered"] = len(result.tab.unanswered)
    return counts


def table_row(result: TabResult) -> str:
    tab = result.tab
    used = ",".join(f"{name}:{count}" for name, count in tab.transports_used.items())
    counts = tab_counts(result)
    row = f"{tab.name:<6} {tab.user:<6} {used:<22} {','.join(tab.topics):<6}"
    return row + "".join(f" {counts[t]:>{width}}" for t, width in TABLE_COLUMNS)


def check(
    publishers: list[Publisher],
    tabs: list[Tab],
    restarts: list[Restart],
    started: float,
    store_kept: bool = False,
) -> SoakReport:
    """Hold every tab's receipts against each publisher's acknowledged order."""
    publications = sorted(
        (p for publisher in publishers for p in publisher.publications),
        key=lambda publication: publication.serial,
    )
    timeline = Timeline(started, restarts)
    results = [check_tab(tab, publications, timeline) for tab in tabs]
    failures = [p.failure for p in publishers if p.failure]
    return SoakReport(
        results,
        publications,
        sum(publisher.refused for publisher in publishers),
        timeline,
        time.monotonic() - started,
        "; ".join(failures) or None,
        store_kept,
    )


@dataclass
class Timeline:
    """When the run started and when the server restarted, to explain misses."""

    started: float
    restarts: list[Restart]

    def at(self, moment: float) -> str:
        """`moment` as seconds into the run."""
        return f"{moment - self.started:.3f}s"

    def around_restart(self, moment: float) -> str:
        """`moment` relative to the nearest SIGTERM, if there was one."""
        if not self.restarts:
            return self.at(moment)
        nearest = min(self.restarts, key=lambda r: abs(r.signalled_at - moment))
        return f"{moment - nearest.signalled_at:+.3f}s from SIGTERM"

    def epoch_start(self, moment: float) -> float:
        """Since when the store that answered at `moment` has held messages."""
        starts = [
            r.exited_at for r in self.restarts if r.new_epoch and r.exited_at <= moment
        ]
        return max(starts, default=float("-inf"))

    def explain(self, tab: Tab, publication: Publication) -> str:
        """Why a miss is a miss: times, the tab's neighbours, its announcements."""
        queue = [r for r in tab.receipts if r.queue == publication.queue]
        before = [r for r in queue if r.serial < publication.serial][-1:]
        after = [r for r in queue if r.serial > publication.serial][:1]
        neighbours = ", ".join(
            f"#{r.serial} at {self.at(r.at)}" for r in before + after
        )
        last = publication.queue
        announced = ", ".join(
            f"{a.kind} at {self.at(a.at)} after #{a.last_serials.get(last, 0)}"
            for a in tab.announcements
        )
        restarts = ", ".join(
            f"SIGTERM {self.at(r.signalled_at)}, exited {self.at(r.exited_at)},"
            f" up {self.at(r.listening_at)}"
            for r in self.restarts
        )
        return (
            f"{tab.name} ({tab.user}, {tab.transport}) missed {describe(publication)}"
            f" sent {self.at(publication.sent_at)}, stored"
            f" {self.at(publication.answered_at)}; got [{neighbours}];"
            f" announced [{announced}]; restarts [{restarts}]"
        )


def check_tab(
    tab: Tab, publications: list[Publication], timeline: Timeline
) -> TabResult:
    result = TabResult(tab, received=len(tab.receipts))
    if tab.ready_at is None:
        tab.anomalies.append(f"{tab.name} never connected")
    seen = check_order(tab, result, publications)
    for publication in publications:
        if not expected_by(tab, publication):
            continue
        if publication.serial in seen:
            result.delivered += 1
        elif excused(publication, tab.announcements, timeline):
            result.excused += 1
        else:
            result.missing += 1
            result.note(timeline.explain(tab, publication))
    return result


def check_order(
    tab: Tab, result: TabResult, publications: list[Publication]
) -> set[int]:
    """Count repeats and reorderings; return serials seen.

    Order holds within each queue for each publisher: one publisher's
    acknowledgements come in publication order, two publishers' do not.
    """
    by_serial = {publication.serial: publication for publication in publications}
    seen: set[int] = set()
    newest: dict[tuple[str, int], int] = defaultdict(int)
    for receipt in tab.receipts:
        if receipt.serial in seen:
            result.duplicates += 1
            result.note(f"{tab.name} got #{receipt.serial} twice")
            continue
        seen.add(receipt.serial)
        stream = (receipt.queue, receipt.by)
        if receipt.serial < newest[stream]:
            result.out_of_order += 1
            result.note(
                f"{tab.name} got #{receipt.serial} after #{newest[stream]}"
                f" ({receipt.queue}, publisher {receipt.by})"
            )
        newest[stream] = max(newest[stream], receipt.serial)
        check_receipt(tab, result, receipt, by_serial.get(receipt.serial))
    return seen


def check_receipt(
    tab: Tab, result: TabResult, receipt: Receipt, published: Publication | None
) -> None:
    """A message must be one the tab may see, with the id its sender was given."""
    if published is None:
        tab.anomalies.append(f"{tab.name}: #{receipt.serial} was never published")
    elif not tab.may_see(published.queue, published.topics):
        result.leaked += 1
        result.note(f"{tab.name} ({tab.user}) got {describe(published)}")
    elif published.message_id not in (None, receipt.message_id):
        tab.anomalies.append(f"{tab.name}: #{receipt.serial} has another id")


def expected_by(tab: Tab, publication: Publication) -> bool:
    """Stored, visible to the tab, and published once the tab had a position."""
    return (
        publication.stored
        and tab.ready_at is not None
        and publication.sent_at >= tab.ready_at
        and tab.may_see(publication.queue, publication.topics)
    )


def excused(
    publication: Publication, announcements: list[Announcement], timeline: Timeline
) -> bool:
    """True if an announcement of loss covers this publication.

    It must come after the publication, find the tab before it in that queue,
    and the publication must belong to an earlier epoch: what the current
    store holds is replayed, never lost (queues are long enough in a soak).
    """
    return any(
        publication.sent_at < announcement.at
        and publication.serial > announcement.last_serials.get(publication.queue, 0)
        and publication.sent_at < timeline.epoch_start(announcement.at)
        for announcement in announcements
    )


def describe(publication: Publication) -> str:
    topics = ",".join(publication.topics) or "-"
    return (
        f"#{publication.serial} ({publication.queue}, topics {topics}, "
        f"{publication.message_id})"
    )
