"""The Prometheus series of SPEC §7, and their exposition at /metrics.

Hot path: the delivery hub encodes a broadcast once and hands it to every
socket, so it counts once per fan-out (``inc(n)``) and observes the latency
once per message per process, never once per socket. Each series below is
bound to its labels here, at import, so recording is one ``inc`` and every
series shows (at 0) before any traffic.

Several worker processes on one host (``uvicorn --workers``): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the workers
before they start. Each process then writes its figures there, and /metrics,
whichever worker answers, adds up every process (gauges: live processes
only, see ``forget_dead_processes``). Without it, figures are this process's.
"""

from __future__ import annotations

import glob
import os
import re
import time

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# From a millisecond up: within one process a hand-off usually takes well
# under 5 ms, which Prometheus' default buckets would lump together.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# A live gauge file of a worker process: gauge_livesum_<pid>.db
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")

connections = Gauge(
    "sync_connections",
    "Open WebSocket connections.",
    multiprocess_mode="livesum",
)
waiting_polls = Gauge(
    "sync_waiting_polls",
    "Long polls waiting for a message.",
    multiprocess_mode="livesum",
)
published = Counter(
    "sync_messages_published",
    "Messages stored for delivery, by kind (user or broadcast).",
    ["kind"],
)
delivered = Counter(
    "sync_messages_delivered",
    "Messages handed to a client, by transport (websocket: to the socket's "
    "outbox; polling: in a poll answer).",
    ["transport"],
)
dropped = Counter(
    "sync_messages_dropped",
    "Messages dropped before every reader had them, by reason.",
    ["reason"],
)
poll_requests = Counter("sync_poll_requests", "Poll requests answered.")
delivery_latency = Histogram(
    "sync_delivery_latency_seconds",
    "Publish to hand-off to the socket, live WebSocket delivery (once per "
    "message per process, at the hand-off to its last socket).",
    buckets=LATENCY_BUCKETS,
)

PUBLISHED_USER = published.labels(kind="user")
PUBLISHED_BROADCAST = published.labels(kind="broadcast")
DELIVERED_WEBSOCKET = delivered.labels(transport="websocket")
DELIVERED_POLLING = delivered.labels(transport="polling")
# TTL passed; over QUEUE_MAX_MESSAGES; evicted by STORE_MAX_BYTES; left in
# the outbox of a socket closed 4413 (that client resumes by cursor). The
# last counts every frame left there: almost all are messages, but the odd
# ack or pong among them counts too (the outbox does not tell them apart).
DROPPED_EXPIRED = dropped.labels(reason="expired")
DROPPED_OVERFLOW = dropped.labels(reason="overflow")
DROPPED_STORE_FULL = dropped.labels(reason="store_max_bytes")
DROPPED_SLOW_CONSUMER = dropped.labels(reason="slow_consumer")


def record_live_delivery(sockets: int, timestamp_ms: int) -> None:
    """One message handed to `sockets` local sockets, published at `timestamp_ms`.

    The stamp is the store's, in ms (another instance's clock for a message
    from elsewhere), so the latency is clamped at 0 and exact to a millisecond.
    """
    DELIVERED_WEBSOCKET.inc(sockets)
    delivery_latency.observe(max(time.time() - timestamp_ms / 1000, 0.0))


def count(series: Counter, amount: int) -> None:
    """``series.inc(amount)``, skipped when there is nothing to count."""
    if amount:
        series.inc(amount)


def multiprocess_directory() -> str | None:
    """The shared directory of several worker processes, if configured."""
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The body of /metrics and its content type.

    The classic text format (0.0.4), or OpenMetrics when `accept` (the
    scraper's Accept header) asks for it, as prometheus-client's own server
    decides. With several processes, the figures of every process.
    """
    encode, content_type = choose_encoder(accept)
    directory = multiprocess_directory()
    if directory is None:
        return encode(REGISTRY), content_type
    forget_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return encode(registry), content_type


def forget_dead_processes(directory: str) -> None:
    """Drop the gauges of processes that are gone (say a crashed worker).

    A worker that shuts down cleanly does it itself (``mark_this_process_dead``);
    this catches the others, so ``sync_connections`` never counts the sockets
    of a process that no longer exists.
    """
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = LIVE_GAUGE_FILE.search(os.path.basename(path))
        if match:
            pids.add(int(match[1]))
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)


def mark_this_process_dead() -> None:
    """On shutdown: this process's gauges leave the sums at once."""
    directory = multiprocess_directory()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
