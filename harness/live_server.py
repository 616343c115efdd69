"""A real server process serving the project, for end-to-end tests and benches.

``start_server`` serves ``config.asgi:application`` (SPEC §1, the production
entry point) with uvicorn or daphne, as ``config.servers`` runs them, with
the production settings module, on its own copy of a
migrated SQLite file, with the embedded defaults (no REDIS_URL) plus the given
environment overrides. ``prepare_template_database`` migrates that file once
and creates users alice, bob and staff carol with API tokens.

A server can be restarted on the same port and database (``restart``), so
clients reconnect to the same URL, and ``manage`` runs a management command
(``shell -c`` included) on its database from another process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from config.servers import DEFAULT_SERVER, server_command

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# Generous for a loaded 2-core CI machine; a server is usually up in ~2 s.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 20.0
CHUNK_BYTES = 8192

# name -> is_staff; every user gets an API token and a password.
USERS = {"alice": False, "bob": False, "carol": True}
PASSWORD_PATTERN = "%s-e2e-password"
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')

# What config/settings.py reads: the child starts from the documented defaults
# whatever the developer's shell exports, then gets the test's overrides.
CONFIG_PREFIXES = ("SYNC_", "DJANGO_", "DATABASE_")
CONFIG_NAMES = frozenset(
    {
        "ACCESS_LOG",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "DEBUG",
        "HOST",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "NUM_PROXIES",
        "PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "REDIS_URL",
        "SECRET_KEY",
        "SECURE_COOKIES",
        "WEB_CONCURRENCY",
    }
)

CREATE_USERS = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

tokens = {}
for name, is_staff in %r.items():
    user = get_user_model().objects.create_user(
        name, password=%r %% name, is_staff=is_staff
    )
    tokens[name] = Token.objects.create(user=user).key
print("TOKENS=" + json.dumps(tokens))
"""


class ServerFailed(RuntimeError):
    """The server died or never listened; the message carries its log."""


def child_env(database: Path, overrides: dict[str, str]) -> dict[str, str]:
    """The environment of a manage.py or server child process."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in CONFIG_NAMES and not name.startswith(CONFIG_PREFIXES)
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{database}",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def run_manage(
    database: Path, *args: str, overrides: dict[str, str] | None = None
) -> str:
    """Run ``manage.py <args>`` on `database`; return its standard output."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=child_env(database, overrides or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if completed.returncode != 0:
        raise ServerFailed(f"manage.py {args[0]} failed:\n{completed.stderr}")
    return completed.stdout


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def api_path(path: str, **params: Any) -> str:
    """`path` with `params` as its query string."""
    return f"{path}?{urlencode(params)}" if params else path


def chunks_of(body: bytes) -> Iterator[bytes]:
    """`body` in pieces, for a chunked request without Content-Length."""
    for start in range(0, len(body), CHUNK_BYTES):
        yield body[start : start + CHUNK_BYTES]


@dataclass
class Response:
    """Status, lower-cased headers and body of one HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class TemplateDatabase:
    """A migrated SQLite file with the e2e users, copied for each server."""

    path: Path
    tokens: dict[str, str]


@dataclass
class LiveServer:
    """A running server process (uvicorn or daphne) and an HTTP client for it."""

    port: int
    tokens: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    database: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    kind: str = DEFAULT_SERVER

    @staticmethod
    def password(user: str) -> str:
        """The password of e2e user `user`."""
        return PASSWORD_PATTERN % user

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        """URL of the WebSocket endpoint."""
        return f"ws://{HOST}:{self.port}/ws"

    def websocket_url(self, user: str | None = None, **params: Any) -> str:
        """`ws_url` authenticated by ``?token=`` as `user`, with `params`."""
        if user is not None:
            params = {"token": self.tokens[user], **params}
        return api_path(self.ws_url, **params)

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def auth_headers(self, user: str | None) -> dict[str, str]:
        """``Authorization: Token <key>`` for `user`; nothing for None."""
        if user is None:
            return {}
        return {"Authorization": f"Token {self.tokens[user]}"}

    def start_request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        data: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
        timeout: float = REQUEST_TIMEOUT,
    ) -> http.client.HTTPConnection:
        """Send a request on a new connection; read it with `finish`."""
        all_headers = {**self.auth_headers(user), **(headers or {})}
        if data is not None:
            body = json.dumps(data).encode()
            all_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
            connection.request(
                method, path, chunks_of(body or b""), all_headers, encode_chunked=True
            )
        else:
            connection.request(method, path, body, all_headers)
        return connection

    @staticmethod
    def finish(connection: http.client.HTTPConnection) -> Response:
        """Read the answer to a request sent by `start_request`."""
        try:
            answer = connection.getresponse()
            headers = {name.lower(): value for name, value in answer.getheaders()}
            return Response(answer.status, headers, answer.read())
        finally:
            connection.close()

    def request(self, method: str, path: str, **options: Any) -> Response:
        """One request on its own connection (see `start_request`)."""
        return self.finish(self.start_request(method, path, **options))

    def poll(self, user: str, **params: Any) -> dict[str, Any]:
        """GET /api/sync/poll as `user`; the 200 body."""
        response = self.request("GET", api_path("/api/sync/poll", **params), user=user)
        assert response.status == 200, response.body
        return response.json()

    def send(self, user: str, type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/sync/send as `user`; the success body."""
        message = {"type": type, "payload": payload}
        response = self.request("POST", "/api/sync/send", user=user, data=message)
        assert response.status in (200, 201), response.body
        return response.json()

    def broadcast(
        self,
        user: str,
        type: str,
        payload: dict[str, Any],
        topics: list[str] | None = None,
    ) -> dict:
        """POST /api/sync/broadcast as staff `user` (to `topics`); the success body."""
        message: dict[str, Any] = {"type": type, "payload": payload}
        if topics is not None:
            message["topics"] = topics
        response = self.request("POST", "/api/sync/broadcast", user=user, data=message)
        assert response.status in (200, 201), response.body
        return response.json()

    def status(self, user: str = "carol") -> dict[str, Any]:
        """GET /api/sync/status as `user`; the ``status`` object."""
        response = self.request("GET", "/api/sync/status", user=user)
        assert response.status == 200, response.body
        return response.json()["status"]

    def session_cookie(self, user: str) -> str:
        """Log `user` in through /accounts/login/ as a browser does.

        Returns the ``Cookie`` header value carrying the new session.
        """
        form = self.request("GET", "/accounts/login/")
        csrf_token = SimpleCookie(form.headers["set-cookie"])["csrftoken"].value
        fields = {
            "username": user,
            "password": self.password(user),
            "csrfmiddlewaretoken": CSRF_FIELD.search(form.body.decode())[1],
        }
        connection = self.start_request(
            "POST",
            "/accounts/login/",
            body=urlencode(fields).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={csrf_token}",
            },
        )
        try:
            answer = connection.getresponse()
            answer.read()
        finally:
            connection.close()
        assert answer.status == 302, f"login of {user} failed ({answer.status})"
        cookies = SimpleCookie()
        for header in answer.headers.get_all("Set-Cookie", []):
            cookies.load(header)
        return f"sessionid={cookies['sessionid'].value}"

    def head_cursor(self, user: str) -> str:
        """A cursor after everything `user` can see right now."""
        page = self.poll(user, since=0, limit=1000)
        while page["hasMore"]:
            page = self.poll(user, cursor=page["cursor"], limit=1000)
        return page["cursor"]

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if the server has not exited in STOP_TIMEOUT.

        Returns its exit status (negative: killed by that signal).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        return self.process.returncode

    def exited_cleanly(self, status: int) -> bool:
        """True for the exit status of a clean shutdown on SIGTERM.

        daphne exits with 0; uvicorn, once it has shut down cleanly, raises
        the signal it caught again, so its status is -SIGTERM.
        """
        clean = {0, -signal.SIGTERM} if self.kind == "uvicorn" else {0}
        return status in clean

    def restart(self) -> int:
        """Stop (SIGTERM), then serve again on the same port and database.

        Returns the exit status of the stopped process. The log goes on in
        the same file. With the in-memory store, the new process starts a
        new epoch: cursors from before it are recognised as stale.
        """
        exit_status = self.stop()
        self.process = launch_server(
            self.kind, self.port, self._database(), self.overrides, self.log_path
        )
        try:
            wait_until_listening(self)
        except BaseException:
            self.stop()
            raise
        return exit_status

    def manage(self, *args: str) -> str:
        """Run ``manage.py <args>`` on this server's database, in a new process."""
        return run_manage(self._database(), *args, overrides=self.overrides)

    def shell(self, code: str) -> str:
        """Run `code` with ``manage.py shell -c``; return what it printed."""
        return self.manage("shell", "-c", code)

    def create_users(self, *names: str, is_staff: bool = False) -> dict[str, str]:
        """Create users with a password and an API token each (one process).

        Returns their tokens, also added to `tokens`, so each name works
        wherever a user name does (requests, ``websocket_url``).
        """
        users = dict.fromkeys(names, is_staff)
        output = self.shell(CREATE_USERS % (users, PASSWORD_PATTERN))
        created = tokens_printed(output)
        self.tokens.update(created)
        return created

    def rss_bytes(self) -> int:
        """Resident memory of the server process right now (Linux /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if kilobytes is None:
            raise ServerFailed(f"no VmRSS for the server ({self.process.pid})")
        return int(kilobytes[1]) * 1024

    def _database(self) -> Path:
        if self.database is None:
            raise ServerFailed("this server was not started on a known database")
        return self.database


def start_server(
    template: TemplateDatabase,
    directory: Path,
    overrides: dict[str, str],
    kind: str = DEFAULT_SERVER,
) -> LiveServer:
    """Start `kind` on a copy of the template database; wait until it listens."""
    database = directory / "db.sqlite3"
    shutil.copyfile(template.path, database)
    port = free_port()
    log_path = directory / f"{kind}.log"
    log_path.write_bytes(b"")
    process = launch_server(kind, port, database, overrides, log_path)
    # Tokens are copied: users created on this server stay on this server.
    server = LiveServer(
        port,
        dict(template.tokens),
        process,
        log_path,
        database,
        dict(overrides),
        kind,
    )
    try:
        wait_until_listening(server)
    except BaseException:
        server.stop()
        raise
    return server


def launch_server(
    kind: str, port: int, database: Path, overrides: dict[str, str], log_path: Path
) -> subprocess.Popen:
    """Start a `kind` process on `port`, appending its output to `log_path`."""
    env = child_env(database, overrides)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            server_command(kind, HOST, port, env),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_listening(server: LiveServer) -> None:
    """Return once the port accepts connections; fail if the server dies or hangs."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(
                f"{server.kind} exited with {server.process.returncode} before "
                f"listening on {server.port}:\n{server.log()}"
            )
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, server.port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise ServerFailed(
        f"{server.kind} did not listen within {START_TIMEOUT} s:\n{server.log()}"
    )


def prepare_template_database(directory: Path) -> TemplateDatabase:
    """Migrate a database once (slow) and create alice, bob and staff carol."""
    path = directory / "db.sqlite3"
    run_manage(path, "migrate", "--noinput")
    script = CREATE_USERS % (USERS, PASSWORD_PATTERN)
    output = run_manage(path, "shell", "-c", script)
    return TemplateDatabase(path, tokens_printed(output))


def tokens_printed(output: str) -> dict[str, str]:
    """The ``TOKENS=<json>`` line a CREATE_USERS script printed."""
    lines = [line for line in output.splitlines() if line.startswith("TOKENS=")]
    if not lines:
        raise ServerFailed(f"no tokens printed by manage.py shell:\n{output}")
    return json.loads(lines[-1].removeprefix("TOKENS="))
