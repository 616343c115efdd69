"""The bench cases of issue 7, each a coroutine returning table rows.

1. broadcast fan-out to N sockets (paced, then a burst) beside a bare
   ``websockets`` server and python-socketio;
2. per-user delivery: users with 3 sockets each, messages to random users;
3. short polls/s beside a bare Django async view on the same ASGI server;
4. long polls woken by one broadcast;
5. memory per idle socket and idle CPU with a short heartbeat;
6. Redis: cases 1 and 4 on two instances (bench/scaleout.py).

Every case starts its own servers and stops them before returning, so one
case's leftovers never weigh on the next.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect

from bench import targets
from bench.fleet import Fleet, RoundResult
from bench.httpload import short_poll_load
from bench.loadgen import PROTOCOLS
from bench.longpoll import LongPollers
from bench.report import Row, percentile
from bench.servers import (
    BenchDatabase,
    Cluster,
    Server,
    start_bare_django,
    start_bare_websockets,
    start_project,
    start_socketio,
)
from bench.triggers import (
    HttpPool,
    SocketTrigger,
    project_broadcast,
    project_send,
    socketio_emit,
)

PAD = "x" * 150  # makes the bench frame ~200 bytes of JSON
SETTLE_SECONDS = 1.5
QUIET_CPU_SHARE = 0.05  # the server counts as idle below 5% of a core
QUIET_TIMEOUT = 20.0


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one bench run (default or --quick)."""

    fanout_sizes: tuple[int, ...] = (1000, 5000)
    # Broadcasts of the burst at each size (5,000 sockets: fewer, for time).
    burst_broadcasts: tuple[int, ...] = (200, 100)
    burst_inflight: int = 4
    burst_cap_s: float = 30.0
    paced_broadcasts: int = 20
    paced_interval_s: float = 0.5
    paced_cap_s: float = 10.0
    idle_timeout_s: float = 3.0
    per_user_users: int = 500
    per_user_tabs: int = 3
    per_user_messages: int = 400
    per_user_interval_s: float = 0.01
    poll_connections: tuple[int, ...] = (20, 50)
    poll_seconds: float = 5.0
    long_polls: int = 1000
    long_poll_users: int = 10
    idle_sockets: int = 5000
    idle_seconds: float = 30.0
    idle_heartbeat_s: int = 5


QUICK = Plan(
    fanout_sizes=(1000,),
    burst_broadcasts=(100,),
    paced_broadcasts=10,
    per_user_messages=200,
    poll_seconds=3.0,
    idle_sockets=1000,
    idle_seconds=10.0,
)


@dataclass
class Bench:
    """What every case needs: the plan, the database, a folder, the servers."""

    plan: Plan
    database: BenchDatabase
    workdir: Path
    servers: tuple[str, ...]
    socketio: bool  # python-socketio is installed
    progress: Callable[[str], None] = print

    def folder(self, name: str) -> Path:
        """A fresh sub-folder of the work folder, for one measurement."""
        path = self.workdir / f"{name}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        return path


@dataclass
class Fired:
    """A round of triggers: when it started and ended, and what failed."""

    first_us: int
    last_us: int
    errors: list[str]
    answer_s: list[float]


def now_us() -> int:
    """Microseconds since the epoch (shared by every process on the machine)."""
    return time.time_ns() // 1000


@asynccontextmanager
async def running(start: Callable[[], Server]) -> AsyncIterator[Server]:
    """A server started in a thread (it blocks until listening), always stopped."""
    server = await asyncio.to_thread(start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def fire_all(
    trigger, frames: list[dict], inflight: int, interval_s: float, tokens=None
) -> Fired:
    """Fire `frames` in order: at most `inflight` unanswered, starts spaced."""
    gate = asyncio.Semaphore(inflight)
    errors: list[str] = []
    answers: list[float] = []
    started = time.monotonic()

    async def one(frame: dict, token: str | None) -> None:
        try:
            answers.append(await trigger.fire(frame, token))
        except Exception as error:  # counted and reported
            errors.append(repr(error))
        finally:
            gate.release()

    tasks = []
    for index, frame in enumerate(frames):
        await gate.acquire()
        if interval_s:
            await asyncio.sleep(
                max(0.0, started + index * interval_s - time.monotonic())
            )
        frame["t"] = now_us()
        token = tokens[index] if tokens else None
        tasks.append(asyncio.create_task(one(frame, token)))
    await asyncio.gather(*tasks)
    return Fired(frames[0]["t"] if frames else now_us(), now_us(), errors, answers)


def bench_frames(number: int, count: int) -> list[dict]:
    """The frames of round `number`; "t" is stamped when each is fired."""
    return [{"r": number, "seq": seq, "t": 0, "pad": PAD} for seq in range(count)]


async def warm_socket(url: str, proto: str) -> None:
    """Open and close one socket, so lazy imports are not counted as memory."""
    ready, _ = PROTOCOLS[proto]
    async with connect(url, ping_interval=None, compression=None) as ws:
        await asyncio.wait_for(ready(ws), 30)


async def wait_until_quiet(server: Server) -> None:
    """Return once the server uses under QUIET_CPU_SHARE of a core (or in time)."""
    deadline = time.monotonic() + QUIET_TIMEOUT
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        after = server.cpu_seconds()
        if after - before < 0.5 * QUIET_CPU_SHARE:
            return
        before = after


def round_row(
    case: str, server: str, system: str, result: RoundResult, fired: Fired
) -> Row:
    """A row of one round of frames."""
    window = (result.last_us - fired.first_us) / 1e6 if result.delivered else 0
    latencies = result.latencies
    row = Row(
        case,
        server,
        system,
        rate=result.delivered / window if window > 0 else None,
        unit="frames",
        p50=ms(percentile(latencies, 0.5)),
        p99=ms(percentile(latencies, 0.99)),
        max=ms(latencies[-1] if latencies else None),
        lost=result.lost,
        out_of_order=result.out_of_order,
        closed=result.closed,
    )
    row.notes = round_notes(result, fired)
    row.figures = {
        "end": result.end,
        "expected": result.expected,
        "delivered": result.delivered,
        "dupes": result.dupes,
        "windowS": window,
        "publishErrors": len(fired.errors),
        "publishAnswerP50Ms": ms_seconds(percentile(sorted(fired.answer_s), 0.5)),
    }
    return row


def round_notes(result: RoundResult, fired: Fired) -> str:
    """What went wrong in a round, if anything."""
    notes = []
    if result.end != "complete":
        notes.append(f"round ended: {result.end}")
    if result.dupes:
        notes.append(f"{result.dupes} duplicates")
    if result.close_codes:
        notes.append(f"close codes {codes_text(result.close_codes)}")
    if fired.errors:
        notes.append(f"{len(fired.errors)} publishes failed: {fired.errors[0][:120]}")
    return "; ".join(notes)


def codes_text(codes) -> str:
    """{4408: 3, 1006: 1} -> '1006 x1, 4408 x3'."""
    return ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))


def ms(microseconds: float | None) -> float | None:
    """µs -> ms."""
    return None if microseconds is None else microseconds / 1000


def ms_seconds(seconds: float | None) -> float | None:
    """s -> ms."""
    return None if seconds is None else seconds * 1000


# 1. Broadcast fan-out -----------------------------------------------------------


@dataclass(frozen=True)
class FanOutTarget:
    """How to run and reach one system of the fan-out case."""

    system: str
    server: str
    start: Callable[[], Server | Cluster]  # one server, or instances on Redis
    proto: str
    path: str  # WebSocket path and query the clients connect to
    trigger: Callable[[Server | Cluster], object]


def bare_websockets_target(bench: Bench) -> FanOutTarget:
    """The physical-limit baseline: a bare ``websockets`` broadcast server."""
    return FanOutTarget(
        "bare ws",
        "asyncio",
        lambda: start_bare_websockets(bench.folder("bare-ws")),
        "raw",
        "/ws",
        lambda server: SocketTrigger(f"{server.ws_url}/ctl"),
    )


def project_target(
    bench: Bench, system: str, kind: str, start: Callable[[], Server | Cluster]
) -> FanOutTarget:
    """The project (one server or a cluster) as `start` runs it; staff broadcasts
    go to its first instance."""
    database = bench.database
    return FanOutTarget(
        system,
        kind,
        start,
        "project",
        f"/ws?token={database.user_token}",
        lambda server: project_broadcast(server.port, database.staff_token),
    )


def fan_out_systems(bench: Bench) -> list[FanOutTarget]:
    """Bare websockets, socketio (if installed), the project on each server."""
    database = bench.database
    systems = [bare_websockets_target(bench)]
    if bench.socketio:
        systems.append(
            FanOutTarget(
                "socketio",
                "uvicorn",
                lambda: start_socketio(bench.folder("socketio")),
                "socketio",
                "/socket.io/?EIO=4&transport=websocket",
                lambda server: socketio_emit(server.port),
            )
        )
    for kind in bench.servers:
        systems.append(
            project_target(
                bench,
                "project",
                kind,
                lambda kind=kind: start_project(
                    kind, database, bench.folder(f"project-{kind}"), {}
                ),
            )
        )
    return systems


async def fan_out_case(bench: Bench, sockets: int) -> list[Row]:
    """Paced then burst broadcasts to `sockets` sockets, project and baselines."""
    paced_rows, burst_rows = await fan_out_all(bench, fan_out_systems(bench), sockets)
    judge_fan_out(paced_rows, burst_rows, sockets, bench.socketio)
    return paced_rows + burst_rows


async def fan_out_all(
    bench: Bench, systems: list[FanOutTarget], sockets: int, label: str = "1"
) -> tuple[list[Row], list[Row]]:
    """Each system in turn: its paced rows, and its burst rows."""
    paced_rows, burst_rows = [], []
    for system in systems:
        started = time.monotonic()
        paced, burst = await fan_out(bench, system, sockets, label)
        connect_s = paced.figures.get("connectS", 0)
        bench.progress(
            f"  fan-out {sockets:,}: {system.system} on {system.server} "
            f"({time.monotonic() - started:.0f} s, connecting {connect_s:.0f} s)"
        )
        paced_rows.append(paced)
        burst_rows.append(burst)
    return paced_rows, burst_rows


@dataclass(frozen=True)
class RoundSpec:
    """One round of broadcasts to the connected sockets."""

    number: int
    case: str
    count: int
    inflight: int
    interval_s: float
    cap_s: float


def fan_out_rounds(plan: Plan, sockets: int, label: str = "1") -> list[RoundSpec]:
    """Paced first (a burst may leave a backlog behind), then the burst."""
    burst = plan.burst_broadcasts[plan.fanout_sizes.index(sockets)]
    return [
        RoundSpec(
            0,
            f"{label} paced {sockets:,} x{plan.paced_broadcasts} @2/s",
            plan.paced_broadcasts,
            1,
            plan.paced_interval_s,
            plan.paced_cap_s,
        ),
        RoundSpec(
            1,
            f"{label} burst {sockets:,} x{burst}",
            burst,
            plan.burst_inflight,
            0.0,
            plan.burst_cap_s,
        ),
    ]


async def fan_out(
    bench: Bench, system: FanOutTarget, sockets: int, label: str = "1"
) -> list[Row]:
    """One system: start it, connect, run every round; a row per round."""
    specs = fan_out_rounds(bench.plan, sockets, label)
    try:
        async with running(system.start) as server:
            return await measure_fan_out(bench, system, server, sockets, specs)
    except Exception as error:  # one system failing must not end the run
        return [
            failed_row(spec.case, system.server, system.system, error) for spec in specs
        ]


async def measure_fan_out(bench, system, server, sockets, specs) -> list[Row]:
    """Connect `sockets` clients to `server`, then run the rounds of `specs`."""
    urls = server.urls(system.path, sockets)
    trigger = system.trigger(server)
    await trigger.open()
    try:
        await fire_all(trigger, [{"r": -1, "seq": -1, "t": 0, "pad": PAD}], 1, 0)
        for url in dict.fromkeys(urls):  # each instance once
            await warm_socket(url, system.proto)
        await asyncio.sleep(SETTLE_SECONDS)
        rss_before = server.rss_bytes()
        fleet = await Fleet.open(system.proto, urls, bench.folder("fleet"))
        try:
            await asyncio.sleep(SETTLE_SECONDS)
            kib = (server.rss_bytes() - rss_before) / max(fleet.connected, 1) / 1024
            rounds = [
                await broadcast_round(fleet, trigger, server, spec) for spec in specs
            ]
            late = (await fleet.status()).late
        finally:
            await fleet.close()
    finally:
        await trigger.close()
    return [
        fan_out_row(spec, system, fleet, kib, late.get(spec.number, 0), *measured)
        for spec, measured in zip(specs, rounds, strict=True)
    ]


async def broadcast_round(fleet: Fleet, trigger, server: Server, spec: RoundSpec):
    """One round of broadcasts; its result, triggers and server CPU seconds."""
    await fleet.start_round(spec.number, spec.count)
    cpu_before = server.cpu_seconds()
    frames = bench_frames(spec.number, spec.count)
    fired = await fire_all(trigger, frames, spec.inflight, spec.interval_s)
    result = await fleet.end_round(spec.number, fired.last_us, spec.cap_s, 3.0)
    return result, fired, server.cpu_seconds() - cpu_before


def fan_out_row(spec, system, fleet, kib, late, result, fired, cpu) -> Row:
    """A row of one fan-out round."""
    row = round_row(spec.case, system.server, system.system, result, fired)
    row.late, row.kib_per_socket = late, kib
    row.figures.update(
        connected=fleet.connected, connectFailed=fleet.failed, connectS=fleet.connect_s
    )
    if result.delivered:
        per_frame = cpu / result.delivered * 1e6
        row.figures["serverCpuUsPerFrame"] = per_frame
        row.notes = join(f"{per_frame:.0f} us CPU/frame", row.notes)
    if fleet.failed:
        failed = f"{fleet.failed} failed to connect: {fleet.first_error}"
        row.notes = join(failed, row.notes)
    return row


def judge_fan_out(
    paced: list[Row], burst: list[Row], sockets: int, socketio: bool
) -> None:
    """Shares against the baselines, and the targets (set for 1,000 sockets)."""
    for rows in (paced, burst):
        bare = compare_to_bare(rows, paced=rows is paced)
        sio = next((r for r in rows if r.system == "socketio" and r.rate), None)
        for row in rows:
            if rows is burst and row.system == "project" and sockets == 1000:
                row.targets = targets.burst(row, bare, sio)
            if rows is paced and row.system == "project" and sockets == 1000:
                row.targets = targets.paced(row, bare)
        if sio is None and not socketio:
            rows.insert(
                1, Row(rows[0].case, "uvicorn", "socketio", notes="not installed")
            )


def compare_to_bare(rows: list[Row], paced: bool) -> Row | None:
    """Fill every row's share of the bare baseline among `rows`; that baseline."""
    bare = next((r for r in rows if r.system == "bare ws" and r.rate), None)
    for row in rows:
        if bare and row is not bare:
            row.share = share_text(row, bare, paced)
    return bare


def share_text(row: Row, bare: Row, paced: bool) -> str:
    """A burst compares frames/s; a paced round (fixed rate) compares p99."""
    if paced:
        return f"p99 {row.p99 / bare.p99:.1f}x" if row.p99 and bare.p99 else ""
    return f"{row.rate / bare.rate:.0%} bare" if row.rate and bare.rate else ""


# 2. Per-user delivery -----------------------------------------------------------


async def per_user_case(bench: Bench) -> list[Row]:
    """Messages to random users, each with several tabs open, on each server."""
    return await on_each_server(
        bench,
        "per-user",
        per_user_label(bench.plan),
        lambda kind: per_user(bench, kind),
    )


def per_user_label(plan: Plan) -> str:
    """The case column of the per-user rows."""
    return f"2 per-user {plan.per_user_users}x{plan.per_user_tabs} tabs"


async def per_user(bench: Bench, kind: str) -> Row:
    """One server: connect every tab, send to random users, check every tab."""
    plan, database = bench.plan, bench.database
    chooser = random.Random(7)
    users = [
        chooser.randrange(plan.per_user_users) for _ in range(plan.per_user_messages)
    ]
    folder = bench.folder(f"per-user-{kind}")
    async with running(lambda: start_project(kind, database, folder, {})) as server:
        result, fired, late = await send_to_users(bench, server, users)
    row = round_row(per_user_label(plan), kind, "project", result, fired)
    row.late = late
    reached = all_tabs_reached(users, result, plan.per_user_tabs)
    row.notes = join(
        f"{reached}/{len(users)} messages reached all {plan.per_user_tabs} tabs",
        row.notes,
    )
    row.figures["messagesReachingAllTabs"] = reached
    row.targets = targets.per_user(row, reached == len(users))
    return row


async def send_to_users(bench: Bench, server: Server, users: list[int]):
    """Open every tab; POST /api/sync/send as each user of `users` in turn."""
    plan = bench.plan
    tokens = bench.database.bench_tokens[: plan.per_user_users]
    tabs = plan.per_user_tabs
    urls = [f"{server.ws_url}/ws?token={t}" for t in tokens for _ in range(tabs)]
    per_url = [users.count(index // tabs) for index in range(len(urls))]
    trigger = project_send(server.port)
    await fire_all(trigger, [{"r": -1, "seq": -1, "t": 0}], 1, 0, [tokens[0]])
    fleet = await Fleet.open("project", urls, bench.folder("fleet"))
    try:
        await fleet.start_round(2, len(users), per_url)
        frames = [{"r": 2, "seq": seq, "t": 0} for seq in range(len(users))]
        sent_as = [tokens[user] for user in users]
        fired = await fire_all(trigger, frames, 1, plan.per_user_interval_s, sent_as)
        result = await fleet.end_round(2, fired.last_us, 10.0, plan.idle_timeout_s)
        late = (await fleet.status()).late.get(2, 0)
    finally:
        await fleet.close()
        await trigger.close()
    return result, fired, late


def all_tabs_reached(users: list[int], result: RoundResult, tabs: int) -> int:
    """How many messages reached every tab of their user."""
    seen = {index: set(seqs or ()) for index, seqs in result.received.items()}
    return sum(
        all(seq in seen.get(user * tabs + tab, ()) for tab in range(tabs))
        for seq, user in enumerate(users)
    )


# 3. Short polls -----------------------------------------------------------------


async def short_poll_case(bench: Bench) -> list[Row]:
    """Short polls/s of the project beside a bare Django view, on each server."""
    rows = []
    for kind in bench.servers:
        bench.progress(f"  short polls: bare Django and project on {kind}")
        try:
            rows += await short_polls(bench, kind)
        except Exception as error:  # one server failing must not end the run
            for connections in bench.plan.poll_connections:
                label = short_poll_label(connections)
                rows.append(failed_row(label, kind, "bare django", error))
                rows.append(failed_row(label, kind, "project", error))
    return rows


def short_poll_label(connections: int) -> str:
    """The case column of the short-poll rows."""
    return f"3 short polls c{connections}"


async def short_polls(bench: Bench, kind: str) -> list[Row]:
    """Both systems up at once; per concurrency the bare view, then the project.

    Alternating keeps each pair of figures close in time, so a neighbour's
    load on the machine weighs on both alike.
    """
    plan, database = bench.plan, bench.database
    folder = bench.folder(f"polls-{kind}")
    path = f"/api/sync/poll?since={int(time.time() * 1000)}"
    systems = (("bare django", None), ("project", database.user_token))
    rows = []
    async with (
        running(lambda: start_bare_django(kind, folder)) as bare,
        running(lambda: start_project(kind, database, folder, {})) as project,
    ):
        servers = (bare, project)
        for server, (_, token) in zip(servers, systems, strict=True):
            await asyncio.to_thread(warm_up_polls, server.port, path, token)
        for connections in plan.poll_connections:
            pair = []
            for server, (system, token) in zip(servers, systems, strict=True):
                load = await asyncio.to_thread(
                    short_poll_load,
                    server.port,
                    path,
                    connections,
                    plan.poll_seconds,
                    token,
                )
                pair.append(load_row(short_poll_label(connections), kind, system, load))
            judge_short_polls(*pair)
            rows += pair
    return rows


def judge_short_polls(bare: Row, project: Row) -> None:
    """The project's share of the bare view's requests/s, and its target."""
    if bare.rate and project.rate:
        project.share = f"{project.rate / bare.rate:.0%} bare"
    project.targets = targets.short_polls(project, bare)


def warm_up_polls(port: int, path: str, token: str | None) -> None:
    """A few requests first, so lazy imports and connections are not measured."""
    pool = HttpPool(port)
    try:
        for _ in range(20):
            status, body = pool.request("GET", path, token=token)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}: {body[:200]!r}")
    finally:
        pool.close()


def load_row(label: str, kind: str, system: str, load) -> Row:
    """A row of one short-poll load run."""
    notes = [load.tool]
    if load.non_2xx or load.errors:
        notes.append(f"{load.non_2xx} non-2xx, {load.errors} socket errors")
    return Row(
        label,
        kind,
        system,
        rate=load.requests_per_s,
        unit="requests",
        p50=load.p50_ms,
        p99=load.p99_ms,
        max=load.max_ms,
        notes="; ".join(notes),
        figures={"tool": load.tool, "non2xx": load.non_2xx, "errors": load.errors},
    )


# 4. Long polls ------------------------------------------------------------------


async def long_poll_case(bench: Bench) -> list[Row]:
    """Long polls woken by one broadcast, on each server."""
    return await on_each_server(
        bench,
        "long polls",
        long_poll_label(bench.plan),
        lambda kind: long_polls(bench, kind),
    )


def long_poll_label(plan: Plan, case: str = "4") -> str:
    """The case column of the long-poll rows."""
    return f"{case} long polls {plan.long_polls:,} woken"


def long_poll_env(plan: Plan) -> dict[str, str]:
    """Settings that let every long poll of the plan wait at once."""
    return {"SYNC_POLL_MAX_WAITING_PER_USER": str(plan.long_polls)}


async def long_polls(bench: Bench, kind: str) -> Row:
    """One server: park the long polls, broadcast once, time every answer."""
    plan = bench.plan
    folder = bench.folder(f"long-polls-{kind}")
    env = long_poll_env(plan)
    woken = await wake_long_polls(
        bench, lambda: start_project(kind, bench.database, folder, env), folder
    )
    row = long_poll_row(long_poll_label(plan), kind, "project", plan.long_polls, woken)
    row.targets = targets.long_polls(row, woken.post_ms, row.lost == 0)
    return row


@dataclass
class Woken:
    """Long polls answered after one broadcast."""

    answers: list[tuple[int, int, int]]  # (µs since the epoch, status, count)
    started_us: int  # when the broadcast was sent
    post_ms: float  # how long the broadcast's POST took to answer
    not_sent: int  # long polls that could not be sent


async def wake_long_polls(
    bench: Bench, start: Callable[[], Server | Cluster], folder: Path
) -> Woken:
    """Start the system, park the long polls over its instances, broadcast
    once through its first instance, and collect every answer."""
    plan, database = bench.plan, bench.database
    tokens_file = folder / "tokens.json"
    tokens_file.write_text(json.dumps(database.bench_tokens[: plan.long_poll_users]))
    async with running(start) as server:
        trigger = project_broadcast(server.port, database.staff_token)
        await fire_all(trigger, [{"r": -1, "seq": -1, "t": 0}], 1, 0)
        since = await asyncio.to_thread(server_now_ms, server.port, database.user_token)
        pollers = await LongPollers.start(
            server.ports, tokens_file, plan.long_polls, since
        )
        try:
            await wait_until_quiet(server)
            started = now_us()
            post_s = await trigger.fire({"r": 4, "seq": 0, "t": started})
            answers = await pollers.answers(60.0)
        finally:
            await pollers.stop()
            await trigger.close()
    return Woken(answers, started, post_s * 1000, pollers.failed)


def server_now_ms(port: int, token: str) -> int:
    """The poll's `timestamp` now: a `since` after everything published so far."""
    status, body = HttpPool(port).request("GET", "/api/sync/poll", token=token)
    if status != 200:
        raise RuntimeError(f"GET /api/sync/poll -> {status}: {body[:200]!r}")
    return json.loads(body)["timestamp"]


def long_poll_row(label: str, kind: str, system: str, total: int, woken: Woken) -> Row:
    """A row of `total` long polls woken by one broadcast (its targets apart)."""
    started_us = woken.started_us
    early = sum(1 for received, _, _ in woken.answers if received < started_us)
    woke = sorted(
        (received - started_us) / 1000
        for received, status, count in woken.answers
        if status == 200 and count and received >= started_us
    )
    row = Row(
        label,
        kind,
        system,
        p50=percentile(woke, 0.5),
        p99=percentile(woke, 0.99),
        max=woke[-1] if woke else None,
        lost=total - len(woke),
        notes=f"{len(woke)}/{total} woken; broadcast POST {woken.post_ms:.0f} ms",
    )
    if early or woken.not_sent:
        row.notes += (
            f"; {early} answered before the broadcast, {woken.not_sent} not sent"
        )
    row.figures = {"woken": len(woke), "early": early, "broadcastMs": woken.post_ms}
    return row


# 5. Idle sockets ----------------------------------------------------------------


async def idle_case(bench: Bench) -> list[Row]:
    """Memory per idle socket and idle CPU with a short heartbeat, per server."""
    return await on_each_server(
        bench, "idle sockets", idle_label(bench.plan), lambda kind: idle(bench, kind)
    )


def idle_label(plan: Plan) -> str:
    """The case column of the idle rows."""
    return f"5 idle {plan.idle_sockets:,}, {plan.idle_seconds:g} s"


async def idle(bench: Bench, kind: str) -> Row:
    """Start the project with a short heartbeat; measure its idle sockets."""
    plan, database = bench.plan, bench.database
    heartbeat = {"SYNC_HEARTBEAT_INTERVAL": str(plan.idle_heartbeat_s)}
    folder = bench.folder(f"idle-{kind}")
    async with running(
        lambda: start_project(kind, database, folder, heartbeat)
    ) as server:
        fleet, kib, cpu_share, status = await measure_idle(bench, server)
    row = Row(
        idle_label(plan),
        kind,
        "project",
        closed=fleet.connected - status.open,
        kib_per_socket=kib,
        notes=f"CPU {cpu_share:.1%} of a core, heartbeat {plan.idle_heartbeat_s} s",
    )
    if status.close_codes:
        row.notes += f"; close codes {codes_text(status.close_codes)}"
    if fleet.failed:
        row.notes += f"; {fleet.failed} failed to connect: {fleet.first_error}"
    row.figures = {"cpuShare": cpu_share, "connected": fleet.connected}
    row.targets = targets.idle(row, cpu_share, plan.idle_sockets, plan.idle_heartbeat_s)
    return row


async def measure_idle(bench: Bench, server: Server):
    """Connect the idle sockets: KiB per socket, then CPU over the idle window."""
    plan = bench.plan
    url = f"{server.ws_url}/ws?token={bench.database.user_token}"
    await warm_socket(url, "project")
    await asyncio.sleep(SETTLE_SECONDS)
    rss_before = server.rss_bytes()
    fleet = await Fleet.open(
        "project", [url] * plan.idle_sockets, bench.folder("fleet")
    )
    try:
        await asyncio.sleep(SETTLE_SECONDS)
        kib = (server.rss_bytes() - rss_before) / max(fleet.connected, 1) / 1024
        cpu_before = server.cpu_seconds()
        await asyncio.sleep(plan.idle_seconds)
        cpu_share = (server.cpu_seconds() - cpu_before) / plan.idle_seconds
        status = await fleet.status()
    finally:
        await fleet.close()
    return fleet, kib, cpu_share, status


async def on_each_server(
    bench: Bench,
    what: str,
    label: str,
    measure: Callable[[str], Awaitable[Row]],
    system: str = "project",
) -> list[Row]:
    """`measure(kind)` on each server in turn; a failure becomes its row."""
    rows = []
    for kind in bench.servers:
        bench.progress(f"  {what}: {system} on {kind}")
        try:
            rows.append(await measure(kind))
        except Exception as error:  # one server failing must not end the run
            rows.append(failed_row(label, kind, system, error))
    return rows


def failed_row(case: str, server: str, system: str, error: BaseException) -> Row:
    """A row saying why a measurement could not be made."""
    text = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return Row(case, server, system, notes=f"FAILED {text}")


def join(*parts: str) -> str:
    """Non-empty parts, separated by '; '."""
    return "; ".join(part for part in parts if part)
