"""Start and stop the servers the bench measures, each one our own child process.

The project runs on daphne or uvicorn with its own command lines
(``config/servers.py``, as ``make run`` serves it) against its own copy of a
migrated SQLite file; the baselines are a bare ``websockets``
broadcast server, python-socketio on uvicorn and a bare Django async view on
the same ASGI server as the project. A server is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.servers import server_command
from harness.live_server import CONFIG_NAMES, CONFIG_PREFIXES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ASGI_SERVERS = ("daphne", "uvicorn")
# Generous for a 2-core machine shared with other test suites.
START_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# No access log line per request, for the project and the baselines alike
# (the project's logging setup keeps what these options choose).
QUIET = {
    "uvicorn": ["--log-level", "warning", "--no-access-log"],
    "daphne": ["--verbosity", "0"],
}
# Production settings (DEBUG off), with the per-user caps lifted: the bench
# connects thousands of sockets and fires thousands of requests as few users.
PROJECT_ENV = {
    "DJANGO_ENV": "production",
    "SYNC_WS_MAX_CONNECTIONS_PER_USER": "100000",
    "SYNC_RATE_LIMIT": "1000000000/15m",
    "SYNC_WS_CONNECT_RATE": "1000000000/1m",
    "SYNC_WS_USER_RATE_LIMIT": "1000000000/10s",
}

CREATE_USERS = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from rest_framework.authtoken.models import Token

User = get_user_model()
names = ["carol", "alice"] + ["bench%%04d" %% n for n in range(%d)]
users = User.objects.bulk_create(
    User(username=name, password=make_password(None), is_staff=name == "carol")
    for name in names
)
users = list(User.objects.filter(username__in=names).order_by("id"))
tokens = [Token(key=Token.generate_key(), user=user) for user in users]
Token.objects.bulk_create(tokens)
print("TOKENS=" + json.dumps({t.user.username: t.key for t in tokens}))
"""


class ServerFailed(RuntimeError):
    """A server died, never listened, or a manage.py step failed."""


@dataclass(frozen=True)
class BenchDatabase:
    """A migrated SQLite file with staff carol, alice and the per-user users."""

    path: Path
    staff_token: str
    user_token: str
    bench_tokens: list[str]


@dataclass
class Server:
    """A running server process and where to reach it."""

    name: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def http_url(self) -> str:
        """Base URL for HTTP requests."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Base URL for WebSocket connections."""
        return f"ws://{HOST}:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process right now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(kilobytes[1]) * 1024 if kilobytes else 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        return process_cpu_seconds(self.process.pid)

    def log_tail(self, characters: int = 2000) -> str:
        """The end of what the server wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace")[-characters:]

    @property
    def ports(self) -> list[int]:
        """Every port serving the system (one here; a cluster has several)."""
        return [self.port]

    def urls(self, path: str, count: int) -> list[str]:
        """`count` WebSocket URLs of `path`, for as many clients."""
        return [f"{self.ws_url}{path}"] * count

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server has not exited in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@dataclass
class Cluster:
    """Instances of the project on one Redis, measured as one system.

    Publishes go to the first instance; clients are spread over all of
    them; memory and CPU are the sums of the instances'.
    """

    servers: list[Server]

    @property
    def port(self) -> int:
        """Where publishes go: the first instance."""
        return self.servers[0].port

    @property
    def ports(self) -> list[int]:
        """The port of each instance."""
        return [server.port for server in self.servers]

    def urls(self, path: str, count: int) -> list[str]:
        """`count` URLs of `path`, dealt to the instances in turn."""
        return [
            f"{self.servers[index % len(self.servers)].ws_url}{path}"
            for index in range(count)
        ]

    def rss_bytes(self) -> int:
        """Resident memory of every instance."""
        return sum(server.rss_bytes() for server in self.servers)

    def cpu_seconds(self) -> float:
        """CPU time of every instance."""
        return sum(server.cpu_seconds() for server in self.servers)

    def stop(self) -> None:
        """Stop every instance."""
        for server in self.servers:
            server.stop()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def clean_env(**overrides: str) -> dict[str, str]:
    """Our environment without the project's settings, plus `overrides`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in CONFIG_NAMES and not name.startswith(CONFIG_PREFIXES)
    }
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **overrides)
    return env


def project_env(database: Path, overrides: dict[str, str]) -> dict[str, str]:
    """The environment of a project process (manage.py or an ASGI server)."""
    settings = {**PROJECT_ENV, **overrides}
    return clean_env(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY=secrets.token_urlsafe(48),
        **settings,
    )


def run_manage(database: Path, *args: str) -> str:
    """Run ``manage.py <args>`` on `database`; return its standard output."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=project_env(database, {}),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if completed.returncode != 0:
        raise ServerFailed(f"manage.py {args[0]} failed:\n{completed.stderr[-3000:]}")
    return completed.stdout


def prepare_database(directory: Path, bench_users: int) -> BenchDatabase:
    """Migrate a database once; create carol (staff), alice and `bench_users`."""
    path = directory / "template.sqlite3"
    run_manage(path, "migrate", "--noinput")
    output = run_manage(path, "shell", "-c", CREATE_USERS % bench_users)
    line = next((row for row in output.splitlines() if row.startswith("TOKENS=")), None)
    if line is None:
        raise ServerFailed(f"no tokens printed by manage.py shell:\n{output}")
    tokens = json.loads(line.removeprefix("TOKENS="))
    bench = [tokens[f"bench{n:04d}"] for n in range(bench_users)]
    return BenchDatabase(path, tokens["carol"], tokens["alice"], bench)


def asgi_command(
    kind: str, application: str, port: int, env: dict[str, str] | None = None
) -> list[str]:
    """`application` served by daphne or uvicorn as ``make run`` serves the
    project (config/servers.py), without access log."""
    command = server_command(
        kind, HOST, port, os.environ if env is None else env, application
    )
    return command + QUIET[kind]


def spawn(name: str, command: list[str], port: int, env: dict, workdir: Path) -> Server:
    """Start `command`, which serves on `port`; return once it accepts connections."""
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, port, process, log_path)
    try:
        wait_until_listening(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_listening(server: Server) -> None:
    """Return once the port accepts connections; fail if the server dies or hangs."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(
                f"{server.name} exited with {server.process.returncode}:\n"
                f"{server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, server.port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise ServerFailed(f"{server.name} did not listen in time:\n{server.log_tail()}")


def project_command(kind: str, port: int, env: dict[str, str]) -> list[str]:
    """The project's own command line for `kind`."""
    return asgi_command(kind, "config.asgi:application", port, env)


def start_project(
    kind: str, database: BenchDatabase, workdir: Path, overrides: dict[str, str]
) -> Server:
    """The project on `kind` (daphne or uvicorn), on a fresh copy of `database`."""
    copy = workdir / f"project-{kind}-{time.monotonic_ns()}.sqlite3"
    shutil.copyfile(database.path, copy)
    port = free_port()
    env = project_env(copy, overrides)
    return spawn(
        f"project-{kind}", project_command(kind, port, env), port, env, workdir
    )


def start_cluster(
    kind: str,
    database: BenchDatabase,
    workdir: Path,
    overrides: dict[str, str],
    instances: int = 2,
) -> Cluster:
    """`instances` of the project on `kind`, each with `overrides` (REDIS_URL)."""
    cluster = Cluster([])
    try:
        for _ in range(instances):
            cluster.servers.append(start_project(kind, database, workdir, overrides))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_bare_django(kind: str, workdir: Path) -> Server:
    """The bare Django async view of bench/bare on `kind`."""
    port = free_port()
    command = asgi_command(kind, "bench.bare.asgi:application", port)
    env = clean_env(DJANGO_SETTINGS_MODULE="bench.bare.settings")
    return spawn(f"bare-django-{kind}", command, port, env, workdir)


def start_bare_websockets(workdir: Path) -> Server:
    """A bare ``websockets`` broadcast server, one asyncio process."""
    port = free_port()
    command = [sys.executable, "-m", "bench.peers.ws_broadcast", str(port)]
    return spawn("bare-websockets", command, port, clean_env(), workdir)


def start_socketio(workdir: Path) -> Server:
    """python-socketio's AsyncServer (ASGI) on uvicorn, stock options."""
    port = free_port()
    command = asgi_command("uvicorn", "bench.peers.socketio_app:application", port)
    return spawn("socketio-uvicorn", command, port, clean_env(), workdir)


def socketio_installed() -> bool:
    """Whether python-socketio can be imported (bench/requirements.txt)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import socketio"], capture_output=True, check=False
    )
    return probe.returncode == 0
