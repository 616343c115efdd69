"""One load-generator process: WebSocket clients that listen and time what they get.

    python -m bench.loadgen --proto project --urls FILE --out DIR --tag 0

Each client opens one URL of the JSON list in FILE (at most --concurrency
handshakes at a time) and answers keepalive pings. Bench frames carry
``{"r": round, "seq": i, "t": publish time in µs since the epoch}``; every
process shares the machine's clock, so ``now - t`` is publish → receive.

Driven by lines (stdin → stdout):

- on start → ``READY {"connected", "failed", "firstError"}``
- ``ROUND r m record expected_file|-`` → ``STARTED``: frames of round r carry
  seq 0..m-1; each client expects all m, or the count at its index in the
  JSON list of expected_file; with record=1 each client's seqs are kept.
- ``END r last_trigger_us cap_s idle_s`` → ``RESULT {...}`` once every frame
  came, or nothing came for idle_s, or cap_s after the last trigger (see
  `drain`). Latencies (int64 µs) go to DIR/lat-TAG-r.bin, recorded seqs to
  DIR/recv-TAG-r.json.
- ``STATUS`` → ``STATUS {"open", "closeCodes", "late"}``: sockets still open,
  how many were closed with each code so far, and frames of finished rounds
  that arrived after their round ended (late).
- ``QUIT`` or end of input: exit at once, without closing handshakes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

try:  # orjson (bench/requirements.txt) decodes 2-3x faster
    from orjson import loads
except ImportError:  # pragma: no cover - the plain library works too
    from json import loads

PONG = '{"type":"pong"}'
CONNECT_ATTEMPTS = 3
HANDSHAKE_TIMEOUT = 30.0


# Protocols: ready(ws) returns once the client is subscribed; decode(frame)
# returns the bench payload (dict), a reply to send (str) or None (ignored).


async def ready_first_frame(ws: ClientConnection) -> None:
    """Bare websockets: its first frame says the client is registered."""
    await ws.recv()


async def ready_socketio(ws: ClientConnection) -> None:
    """Engine.IO open packet, then the Socket.IO connect of namespace /."""
    opened = await ws.recv()
    if not opened.startswith("0"):
        raise RuntimeError(f"engine.io open packet expected, got {opened[:80]!r}")
    await ws.send("40")
    while not (await ws.recv()).startswith("40"):
        pass


async def ready_project(ws: ClientConnection) -> None:
    """The project: its first frame is connection.established."""
    while loads(await ws.recv()).get("type") != "connection.established":
        pass


def decode_raw(frame: str) -> dict | None:
    """Bare websockets relays the bench frame itself."""
    return loads(frame)


def decode_socketio(frame: str) -> dict | str | None:
    """``42["msg",{...}]`` is an event; ``2`` is a ping answered with ``3``."""
    if frame.startswith("42"):
        return loads(frame[2:])[1]
    return "3" if frame == "2" else None


def decode_project(frame: str) -> dict | str | None:
    """A message envelope carries the bench frame as payload; pings get pongs."""
    message = loads(frame)
    if message.get("type") == "ping":
        return PONG
    payload = message.get("payload")
    return payload if isinstance(payload, dict) and "seq" in payload else None


PROTOCOLS = {
    "raw": (ready_first_frame, decode_raw),
    "socketio": (ready_socketio, decode_socketio),
    "project": (ready_project, decode_project),
}


class Client:
    """One socket and what it saw in the current round."""

    __slots__ = ("index", "last_seq", "received", "seen", "ws")

    def __init__(self, index: int, ws: ClientConnection) -> None:
        self.index = index
        self.ws = ws
        self.seen = bytearray()
        self.last_seq = -1
        self.received: list[int] | None = None


class Round:
    """Counters of one round of frames."""

    def __init__(self, number: int, size: int, expected: int, record: bool) -> None:
        self.number = number
        self.size = size
        self.expected = expected
        self.record = record
        self.delivered = self.dupes = self.out_of_order = 0
        self.first_us = self.last_us = 0
        self.closed: Counter[int] = Counter()
        self.latencies = array("q")
        self.done = asyncio.Event()
        self.over = False
        if expected == 0:
            self.done.set()

    def summary(self, end: str) -> dict:
        """The RESULT line of this round."""
        return {
            "end": end,
            "expected": self.expected,
            "delivered": self.delivered,
            "dupes": self.dupes,
            "outOfOrder": self.out_of_order,
            "closed": sum(self.closed.values()),
            "closeCodes": {str(code): n for code, n in self.closed.items()},
            "firstUs": self.first_us,
            "lastUs": self.last_us,
        }


class Listener:
    """Every client of this process, and the round they are counting."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.round: Round | None = None
        self.late: Counter[int] = Counter()
        self.closed_between: Counter[int] = Counter()
        self.close_codes: Counter[int] = Counter()  # every close so far
        self.open = 0
        self.tasks: set[asyncio.Task] = set()  # the listeners, kept referenced

    def start_round(self, rnd: Round) -> None:
        """Count the frames of `rnd` from now on."""
        for client in self.clients:
            client.seen = bytearray(rnd.size)
            client.last_seq = -1
            client.received = [] if rnd.record else None
        rnd.closed.update(self.closed_between)
        self.closed_between.clear()
        self.round = rnd

    def receive(self, client: Client, frame: dict, now: int) -> None:
        """Count one bench frame."""
        rnd = self.round
        if rnd is None or frame.get("r") != rnd.number or rnd.over:
            self.late[frame.get("r", -1)] += 1
            return
        seq = frame["seq"]
        if not 0 <= seq < rnd.size:
            return
        if client.seen[seq]:
            rnd.dupes += 1
            return
        client.seen[seq] = 1
        if seq < client.last_seq:
            rnd.out_of_order += 1
        client.last_seq = seq
        rnd.latencies.append(now - frame["t"])
        rnd.delivered += 1
        rnd.last_us = now
        rnd.first_us = rnd.first_us or now
        if client.received is not None:
            client.received.append(seq)
        if rnd.delivered >= rnd.expected:
            rnd.done.set()

    def closed(self, code: int | None) -> None:
        """A socket was closed by the server (or the network)."""
        self.open -= 1
        self.close_codes[code or 1006] += 1
        rnd = self.round
        target = rnd.closed if rnd and not rnd.over else self.closed_between
        target[code or 1006] += 1


async def listen(client: Client, decode, listener: Listener) -> None:
    """Read frames until the socket closes."""
    ws = client.ws
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            now = time.time_ns() // 1000
            item = decode(frame)
            if item is None:
                continue
            if item.__class__ is str:
                await ws.send(item)
                continue
            listener.receive(client, item, now)
    listener.closed(ws.close_code)


async def open_client(url: str, ready, gate: asyncio.Semaphore):
    """A connected, subscribed client, or the last error after a few attempts."""
    error: BaseException = RuntimeError("not tried")
    for attempt in range(CONNECT_ATTEMPTS):
        async with gate:
            ws = None
            try:
                ws = await connect(
                    url,
                    ping_interval=None,
                    compression=None,
                    max_queue=None,
                    open_timeout=HANDSHAKE_TIMEOUT,
                    close_timeout=1,
                    user_agent_header=None,
                )
                await asyncio.wait_for(ready(ws), HANDSHAKE_TIMEOUT)
                return ws
            except Exception as failure:  # counted and reported
                error = failure
                if ws is not None:
                    await ws.close()
        await asyncio.sleep(0.5 * (attempt + 1))
    return error


async def drain(rnd: Round, last_trigger_us: int, cap_s: float, idle_s: float) -> str:
    """Wait for the round's frames: "complete", "idle" or "cap".

    "idle": nothing came for `idle_s`, so the missing frames were dropped;
    "cap": `cap_s` after the last trigger frames were still coming, so some
    of the missing may only be late.
    """
    cap = last_trigger_us / 1e6 + cap_s
    while not rnd.done.is_set():
        now = time.time()
        if now >= cap:
            return "cap"
        if now - max(rnd.last_us, last_trigger_us) / 1e6 >= idle_s:
            return "idle"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rnd.done.wait(), min(0.25, cap - now))
    return "complete"


def emit(tag: str, payload: dict | None = None) -> None:
    """One answer line to the orchestrator."""
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """Our standard input as an asyncio stream."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    protocol = asyncio.StreamReaderProtocol(reader)
    await loop.connect_read_pipe(lambda: protocol, sys.stdin)
    return reader


def expected_counts(listener: Listener, size: int, path: str) -> int:
    """Frames this process should receive in a round."""
    if path == "-":
        return size * listener.open
    per_url = json.loads(Path(path).read_text())
    return sum(per_url[client.index] for client in listener.clients)


def start_round(listener: Listener, words: list[str]) -> None:
    """``ROUND r m record expected_file|-``."""
    number, size, record = int(words[1]), int(words[2]), words[3] == "1"
    expected = expected_counts(listener, size, words[4])
    listener.start_round(Round(number, size, expected, record))
    emit("STARTED")


async def end_round(listener: Listener, words: list[str], out: Path, tag: str):
    """``END r last_trigger_us cap_s idle_s``: drain, then report."""
    rnd = listener.round
    if rnd is None or rnd.number != int(words[1]):
        raise RuntimeError(f"END for a round that was not started: {words}")
    end = await drain(rnd, int(words[2]), float(words[3]), float(words[4]))
    rnd.over = True
    with (out / f"lat-{tag}-{rnd.number}.bin").open("wb") as file:
        rnd.latencies.tofile(file)
    if rnd.record:
        seqs = {client.index: client.received for client in listener.clients}
        (out / f"recv-{tag}-{rnd.number}.json").write_text(json.dumps(seqs))
    emit("RESULT", rnd.summary(end))


async def open_and_listen(index: int, url: str, ready, gate, listener, decode):
    """Open one client and start listening at once (it must answer pings while
    the others connect); the error if it could not connect."""
    ws = await open_client(url, ready, gate)
    if isinstance(ws, BaseException):
        return ws
    client = Client(index, ws)
    listener.clients.append(client)
    listener.open += 1
    listener.tasks.add(asyncio.create_task(listen(client, decode, listener)))
    return None


async def connect_all(urls: list[str], ready, concurrency: int, listener, decode):
    """Open every client (listening as soon as it is open); say READY."""
    gate = asyncio.Semaphore(concurrency)
    opened = await asyncio.gather(
        *(
            open_and_listen(index, url, ready, gate, listener, decode)
            for index, url in enumerate(urls)
        )
    )
    errors = [repr(error) for error in opened if error is not None]
    emit(
        "READY",
        {
            "connected": len(listener.clients),
            "failed": len(errors),
            "firstError": errors[0] if errors else None,
        },
    )


def status(listener: Listener) -> dict:
    """The STATUS line: open sockets, close codes so far, late frames."""
    return {
        "open": listener.open,
        "closeCodes": {str(code): n for code, n in listener.close_codes.items()},
        "late": {str(number): n for number, n in listener.late.items()},
    }


async def main(options: argparse.Namespace, urls: list[str]) -> None:
    """Connect to `urls`, then obey the orchestrator's lines until QUIT."""
    ready, decode = PROTOCOLS[options.proto]
    commands = await stdin_reader()
    listener = Listener()
    await connect_all(urls, ready, options.concurrency, listener, decode)
    out = Path(options.out)
    while words := (await commands.readline()).decode().split():
        if words[0] == "ROUND":
            start_round(listener, words)
        elif words[0] == "END":
            await end_round(listener, words, out, options.tag)
        elif words[0] == "STATUS":
            emit("STATUS", status(listener))
        else:
            break
    os._exit(0)  # no closing handshakes: the server is stopped next anyway


def parse_arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proto", choices=PROTOCOLS, required=True)
    parser.add_argument("--urls", required=True, help="JSON list of URLs")
    parser.add_argument("--out", required=True, help="folder for results")
    parser.add_argument("--tag", default="0")
    parser.add_argument("--concurrency", type=int, default=25)
    return parser.parse_args()


def run() -> None:
    """Run `main` on uvloop when it is there."""
    options = parse_arguments()
    urls = json.loads(Path(options.urls).read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main(options, urls))
    else:
        uvloop.run(main(options, urls))


if __name__ == "__main__":
    run()
