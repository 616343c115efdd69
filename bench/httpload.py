"""Short-poll load: ``wrk`` when installed, else several Python processes.

One Python process with an HTTP library tops out near the rate it measures,
so the fallback spreads the connections over LOAD_PROCESSES processes, each
a tight asyncio loop over raw keep-alive sockets (this module's ``__main__``).

    python -m bench.httpload --port P --path /api/sync/poll --connections 10 \
        --seconds 5 [--token KEY]          # one fallback process; prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.servers import HOST, PROJECT_ROOT

LOAD_PROCESSES = 3
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class LoadResult:
    """Requests/s and latency of one load run."""

    tool: str
    requests_per_s: float
    non_2xx: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


def request_bytes(path: str, token: str | None, close: bool = False) -> bytes:
    """A GET request for `path` on our loopback host."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}"]
    if token:
        lines.append(f"Authorization: Token {token}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length:
        return status, await reader.readexactly(int(length[1]))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return status, await read_chunked(reader)
    return status, await reader.read()


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, de-chunked."""
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip() or b"0", 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")
    return body


def parse_duration_ms(text: str) -> float:
    """wrk's ``1.23ms`` / ``850.00us`` / ``2.01s`` in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * UNITS_MS[unit]


def run_wrk(url: str, connections: int, seconds: float, token: str | None):
    """``wrk -t1`` for `seconds` against `url`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Token {token}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rate:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output[-1500:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    percent = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    latency_max = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.MULTILINE)
    return LoadResult(
        "wrk",
        float(rate[1]),
        int(non_2xx[1]) if non_2xx else 0,
        sum(int(n) for n in re.findall(r"\d+", errors[1])) if errors else 0,
        parse_duration_ms(percent["50"]) if "50" in percent else None,
        parse_duration_ms(percent["99"]) if "99" in percent else None,
        parse_duration_ms(latency_max[1]) if latency_max else None,
    )


def run_python(port: int, path: str, connections: int, seconds: float, token):
    """LOAD_PROCESSES fallback processes at once; their figures summed."""
    shares = [connections // LOAD_PROCESSES] * LOAD_PROCESSES
    for extra in range(connections % LOAD_PROCESSES):
        shares[extra] += 1
    command = [sys.executable, "-m", "bench.httpload", "--port", str(port)]
    command += ["--path", path, "--seconds", str(seconds)]
    command += ["--token", token] if token else []
    children = [
        subprocess.Popen(
            [*command, "--connections", str(share)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    results = [
        json.loads(child.communicate(timeout=seconds + 60)[0]) for child in children
    ]
    return combine(results, seconds)


def combine(results: list[dict], seconds: float) -> LoadResult:
    """Sum the fallback processes' counts; percentiles over all their samples."""
    latencies = sorted(ms for result in results for ms in result["latencies"])
    done = sum(result["requests"] for result in results)

    def rank(q: float) -> float | None:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))]
            if latencies
            else None
        )

    return LoadResult(
        f"python x{len(results)}",
        done / seconds,
        sum(result["non2xx"] for result in results),
        sum(result["errors"] for result in results),
        rank(0.5),
        rank(0.99),
        latencies[-1] if latencies else None,
    )


def short_poll_load(port: int, path: str, connections: int, seconds: float, token):
    """Requests/s of `connections` keep-alive clients over `seconds`."""
    if shutil.which("wrk"):
        return run_wrk(f"http://{HOST}:{port}{path}", connections, seconds, token)
    return run_python(port, path, connections, seconds, token)


# The fallback process ----------------------------------------------------------


async def hammer(request: bytes, port: int, stop_at: float, tally: dict) -> None:
    """One keep-alive connection sending `request` back to back until `stop_at`."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            writer.write(request)
            status, _ = await read_response(reader)
            tally["latencies"].append(round((time.monotonic() - started) * 1000, 3))
            tally["requests"] += 1
            tally["non2xx"] += not 200 <= status < 300
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally["errors"] += 1
    finally:
        writer.close()


async def load_process(options: argparse.Namespace) -> dict:
    """Run the connections of one fallback process; its tally."""
    tally = {"requests": 0, "non2xx": 0, "errors": 0, "latencies": []}
    request = request_bytes(options.path, options.token)
    stop_at = time.monotonic() + options.seconds
    await asyncio.gather(
        *(
            hammer(request, options.port, stop_at, tally)
            for _ in range(options.connections)
        )
    )
    return tally


def event_loop_runner():
    """``uvloop.run`` when uvloop is installed, else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run
    return uvloop.run


def main() -> None:
    """One fallback load process: print its tally as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--token")
    options = parser.parse_args()
    print(json.dumps(event_loop_runner()(load_process(options))))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
