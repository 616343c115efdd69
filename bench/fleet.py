"""The orchestrator's side of the load generators (``bench.loadgen`` processes).

A fleet splits its URLs over a few processes, waits until every client is
connected, runs rounds of frames and merges what the processes saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import PROJECT_ROOT, process_cpu_seconds

CONNECT_TIMEOUT = 300.0
ANSWER_TIMEOUT = 30.0


class FleetFailed(RuntimeError):
    """A load generator died or did not answer."""


@dataclass
class RoundResult:
    """What every client of a fleet saw in one round."""

    end: str = "complete"
    expected: int = 0
    delivered: int = 0
    dupes: int = 0
    out_of_order: int = 0
    closed: int = 0
    close_codes: Counter = field(default_factory=Counter)
    first_us: int = 0
    last_us: int = 0
    latencies: list[int] = field(default_factory=list)
    received: dict[int, list[int] | None] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Frames that did not arrive within the round."""
        return self.expected - self.delivered

    def add(self, line: dict) -> None:
        """Fold one process's RESULT into the total."""
        order = ("complete", "idle", "cap")
        self.end = max(self.end, line["end"], key=order.index)
        for name in ("expected", "delivered", "dupes", "closed"):
            setattr(self, name, getattr(self, name) + line[name])
        self.out_of_order += line["outOfOrder"]
        self.close_codes.update({int(c): n for c, n in line["closeCodes"].items()})
        firsts = [us for us in (self.first_us, line["firstUs"]) if us]
        self.first_us = min(firsts, default=0)
        self.last_us = max(self.last_us, line["lastUs"])


@dataclass
class FleetStatus:
    """The fleet's sockets between rounds."""

    open: int = 0
    close_codes: Counter = field(default_factory=Counter)
    late: Counter = field(default_factory=Counter)


class Generator:
    """One ``bench.loadgen`` child process, driven by lines."""

    def __init__(self, process: asyncio.subprocess.Process, tag: str) -> None:
        self.process = process
        self.tag = tag

    @classmethod
    async def start(cls, proto: str, urls_file: Path, out: Path, tag: str):
        """Start the process; it begins connecting at once."""
        command = [sys.executable, "-m", "bench.loadgen", "--proto", proto]
        command += ["--urls", str(urls_file), "--out", str(out), "--tag", tag]
        with (out / f"loadgen-{tag}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=PROJECT_ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return cls(process, tag)

    def send(self, line: str) -> None:
        """One command line."""
        self.process.stdin.write(line.encode() + b"\n")

    async def answer(self, tag: str, timeout: float) -> dict:
        """The payload of the next line starting with `tag`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = max(deadline - loop.time(), 0.1)
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except TimeoutError:
                raise FleetFailed(f"load generator {self.tag}: no {tag}") from None
            if not raw:
                raise FleetFailed(f"load generator {self.tag} exited before {tag}")
            word, _, payload = raw.decode().partition(" ")
            if word.strip() == tag:
                return json.loads(payload) if payload.strip() else {}

    async def stop(self) -> None:
        """QUIT, or kill it if it does not go."""
        if self.process.returncode is not None:
            return
        try:
            self.send("QUIT")
            await asyncio.wait_for(self.process.wait(), 10)
        except (TimeoutError, ConnectionError):
            self.process.kill()
            await self.process.wait()


class Fleet:
    """N WebSocket clients over a few load-generator processes."""

    def __init__(self, generators: list[Generator], shares: list[list[int]], out):
        self.generators = generators
        self.shares = shares  # the URL indexes each generator holds, in order
        self.out = out
        self.connected = self.failed = 0
        self.first_error: str | None = None
        self.connect_s = 0.0

    @classmethod
    async def open(cls, proto: str, urls: list[str], out: Path, processes: int = 2):
        """Start the generators and wait until each client connected (or failed)."""
        shares = [list(range(n, len(urls), processes)) for n in range(processes)]
        shares = [share for share in shares if share]
        generators = []
        for tag, share in enumerate(shares):
            urls_file = out / f"urls-{tag}.json"
            urls_file.write_text(json.dumps([urls[index] for index in share]))
            generators.append(await Generator.start(proto, urls_file, out, str(tag)))
        fleet = cls(generators, shares, out)
        started = time.monotonic()
        try:
            await fleet._wait_ready()
            fleet.connect_s = time.monotonic() - started
        except BaseException:
            await fleet.close()
            raise
        return fleet

    async def _wait_ready(self) -> None:
        for generator in self.generators:
            ready = await generator.answer("READY", CONNECT_TIMEOUT)
            self.connected += ready["connected"]
            self.failed += ready["failed"]
            self.first_error = self.first_error or ready["firstError"]

    @property
    def pids(self) -> list[int]:
        """Process ids of the generators."""
        return [generator.process.pid for generator in self.generators]

    def cpu_seconds(self) -> float:
        """CPU time the generators used so far."""
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    async def start_round(
        self, number: int, size: int, per_url: list[int] | None = None
    ) -> None:
        """Announce round `number` of `size` frames (per-URL counts if not all)."""
        for tag, generator in enumerate(self.generators):
            expected = "-"
            if per_url is not None:
                counts = [per_url[index] for index in self.shares[tag]]
                path = self.out / f"expected-{tag}-{number}.json"
                path.write_text(json.dumps(counts))
                expected = str(path)
            record = int(per_url is not None)
            generator.send(f"ROUND {number} {size} {record} {expected}")
        for generator in self.generators:
            await generator.answer("STARTED", ANSWER_TIMEOUT)

    async def end_round(
        self, number: int, last_trigger_us: int, cap_s: float, idle_s: float
    ) -> RoundResult:
        """Wait for the round's frames; merge every generator's result."""
        for generator in self.generators:
            generator.send(f"END {number} {last_trigger_us} {cap_s} {idle_s}")
        result = RoundResult()
        for tag, generator in enumerate(self.generators):
            line = await generator.answer("RESULT", cap_s + ANSWER_TIMEOUT + 30)
            result.add(line)
            result.latencies.extend(self._latencies(generator.tag, number))
            result.received.update(self._received(tag, number))
        result.latencies.sort()
        return result

    def _latencies(self, tag: str, number: int) -> array:
        values = array("q")
        values.frombytes((self.out / f"lat-{tag}-{number}.bin").read_bytes())
        return values

    def _received(self, tag: int, number: int) -> dict[int, list[int] | None]:
        path = self.out / f"recv-{tag}-{number}.json"
        if not path.exists():
            return {}
        local = json.loads(path.read_text())
        return {self.shares[tag][int(i)]: seqs for i, seqs in local.items()}

    async def status(self) -> FleetStatus:
        """Sockets open, close codes so far, frames late for their round."""
        for generator in self.generators:
            generator.send("STATUS")
        status = FleetStatus()
        for generator in self.generators:
            line = await generator.answer("STATUS", ANSWER_TIMEOUT)
            status.open += line["open"]
            status.close_codes.update(
                {int(code): n for code, n in line["closeCodes"].items()}
            )
            status.late.update({int(number): n for number, n in line["late"].items()})
        return status

    async def close(self) -> None:
        """Stop every generator (no closing handshakes)."""
        await asyncio.gather(*(generator.stop() for generator in self.generators))
