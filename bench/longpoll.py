"""Waiting long polls, spread over a few processes, and when each was answered.

    python -m bench.longpoll --port P --tokens FILE --count 500 --since MS

A process opens --count connections (--concurrency at a time), each sending
``GET /api/sync/poll?since=MS&wait=W`` with a token of the JSON list in FILE,
says ``READY {...}``, then ``RESULT {...}`` with the time (µs since the
epoch), status and message count of every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from bench.httpload import event_loop_runner, read_response, request_bytes
from bench.servers import HOST, PROJECT_ROOT

ANSWER_GRACE = 20.0
READY_TIMEOUT = 120.0


async def open_poll(port: int, request: bytes, gate: asyncio.Semaphore):
    """Connect and send one long poll; the reader to await its answer."""
    async with gate:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(request)
        await writer.drain()
    return reader, writer


async def await_answer(reader, writer, timeout: float) -> tuple[int, int, int]:
    """(µs since the epoch, status, message count) of one long poll's answer."""
    try:
        status, body = await asyncio.wait_for(read_response(reader), timeout)
        received = time.time_ns() // 1000
        count = json.loads(body).get("count", 0) if status == 200 else 0
        return received, status, count
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        return time.time_ns() // 1000, 0, 0
    finally:
        writer.close()


def emit(tag: str, payload: dict) -> None:
    """One line to the driver."""
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


async def poll_process(options: argparse.Namespace, tokens: list[str]) -> None:
    """Open every long poll, say READY, then report every answer."""
    path = f"/api/sync/poll?since={options.since}&wait={options.wait}"
    requests = [
        request_bytes(path, tokens[n % len(tokens)], close=True)
        for n in range(options.count)
    ]
    gate = asyncio.Semaphore(options.concurrency)
    opened = await asyncio.gather(
        *(open_poll(options.port, request, gate) for request in requests),
        return_exceptions=True,
    )
    polls = [item for item in opened if not isinstance(item, BaseException)]
    emit("READY", {"open": len(polls), "failed": len(opened) - len(polls)})
    timeout = options.wait + ANSWER_GRACE
    answers = await asyncio.gather(*(await_answer(*poll, timeout) for poll in polls))
    emit("RESULT", {"answers": answers})


class LongPollers:
    """The driver's handle on the long-poll processes."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes
        self.open = self.failed = 0

    @classmethod
    async def start(
        cls, ports: list[int], tokens_file: Path, total: int, since_ms: int
    ):
        """Start two processes; return once every long poll was sent.

        With several `ports` (instances of one cluster) the processes take
        them in turn, so two instances get half the long polls each.
        """
        processes = []
        for index, share in enumerate((total - total // 2, total // 2)):
            port = ports[index % len(ports)]
            command = [sys.executable, "-m", "bench.longpoll", "--port", str(port)]
            command += ["--tokens", str(tokens_file), "--count", str(share)]
            command += ["--since", str(since_ms)]
            processes.append(
                await asyncio.create_subprocess_exec(
                    *command, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE
                )
            )
        pollers = cls(processes)
        for process in processes:
            ready = await line_of(process, "READY", READY_TIMEOUT)
            pollers.open += ready["open"]
            pollers.failed += ready["failed"]
        return pollers

    async def answers(self, timeout: float) -> list[tuple[int, int, int]]:
        """(µs, status, count) of every long poll, once all were answered."""
        answers = []
        for process in self.processes:
            answers += (await line_of(process, "RESULT", timeout))["answers"]
        return answers

    async def stop(self) -> None:
        """Kill processes still running (after an error)."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def line_of(process: asyncio.subprocess.Process, tag: str, timeout: float):
    """The payload of the next line of `process`, which must start with `tag`."""
    raw = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not raw.startswith(tag.encode() + b" "):
        raise RuntimeError(f"long-poll process: {tag} expected, got {raw[:200]!r}")
    return json.loads(raw[len(tag) + 1 :])


def main() -> None:
    """One long-poll process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="JSON list of tokens")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--since", type=int, required=True)
    parser.add_argument("--wait", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=50)
    options = parser.parse_args()
    tokens = json.loads(Path(options.tokens).read_text())
    event_loop_runner()(poll_process(options, tokens))
    os._exit(0)


if __name__ == "__main__":
    main()
