"""Revoked tokens are refused over HTTP at once, on every instance (issue 15, 6).

The hostile test found a token deleted (or its user deactivated) in another
instance's admin or in ``manage.py shell`` still served over HTTP for 60 s by
an instance that had it cached, while sockets closed at once. Here the change
is made by ``manage.py shell`` (a process of its own, like an operator's
shell) on instance B's settings, while a probe keeps using the token over
HTTP on instance A, which never opened a socket. The user's socket on B is
the baseline: the time it takes to close with 4401 is the time the HTTP
refusal should take too.

Without Redis no other process hears of a change that sends no signal
(``QuerySet.update``): HTTP then refuses it within one heartbeat interval,
as the heartbeat's re-check closes the socket. Figures are printed
(``pytest -s``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from harness.live_server import LiveServer
from tests.e2e.test_hardening import (
    UNTHROTTLED,
    close_answering_pings,
    open_connection,
)

pytestmark = pytest.mark.e2e

# Long, so neither the heartbeat's re-check nor a cache entry expiring can be
# what refuses the token in the two-instance tests.
TWO_INSTANCE_HEARTBEAT = 30
# What the issue asks: well under a second from the change to the first 401.
REFUSED_WITHIN = 1.0
# How long a test waits for the first 401 after the change (today: ~60 s).
WAIT_AT_MOST = 5.0
# A request every PROBE_PACE seconds: the figure's resolution.
PROBE_PACE = 0.02
PROBE_PATH = "/api/sync/poll?limit=1"
# Run in manage.py shell: the change, and when it was made (wall clock).
SHELL_CHANGES = {
    "token deleted": """
import time
from rest_framework.authtoken.models import Token
changed_at = time.time()
Token.objects.filter(user__username={name!r}).delete()
print("CHANGED_AT=%r" % changed_at)
""",
    "user deactivated": """
import time
from django.contrib.auth import get_user_model
user = get_user_model().objects.get(username={name!r})
user.is_active = False
changed_at = time.time()
user.save()
print("CHANGED_AT=%r" % changed_at)
""",
    # QuerySet.update sends no signal: no process is told.
    "user deactivated by update": """
import time
from django.contrib.auth import get_user_model
changed_at = time.time()
get_user_model().objects.filter(username={name!r}).update(is_active=False)
print("CHANGED_AT=%r" % changed_at)
""",
}


@dataclass
class Probe:
    """What a client using one token over HTTP saw."""

    accepted_at: list[float] = field(default_factory=list, repr=False)  # starts
    refused_at: float | None = None  # when the first 401 arrived
    error_code: str | None = None
    accepted: threading.Event = field(default_factory=threading.Event)  # a 200 came
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, server: LiveServer, user: str) -> Probe:
        """Poll as `user` every PROBE_PACE s until a 401, or until `stop` is set."""
        while not self.stop.is_set():
            started = time.time()
            response = server.request("GET", PROBE_PATH, user=user)
            if response.status == 401:
                self.refused_at = time.time()
                self.error_code = response.json()["error"]["code"]
                return self
            assert response.status == 200, response.body
            self.accepted_at.append(started)
            self.accepted.set()
            self.stop.wait(PROBE_PACE)
        return self


def changed_at(output: str) -> float:
    """The CHANGED_AT time a SHELL_CHANGES script printed."""
    lines = [line for line in output.splitlines() if line.startswith("CHANGED_AT=")]
    assert lines, output
    return float(lines[-1].removeprefix("CHANGED_AT="))


@dataclass
class Outcome:
    """When the change was made, and what the HTTP client and the socket saw."""

    changed_at: float
    probe: Probe
    close_code: int | None
    closed_at: float | None

    @property
    def refused_after(self) -> float:
        """Seconds from the change to the first 401 (inf: none in time)."""
        if self.probe.refused_at is None:
            return float("inf")
        return self.probe.refused_at - self.changed_at

    @property
    def closed_after(self) -> float:
        """Seconds from the change to the socket's close (inf: still open)."""
        return (
            float("inf") if self.closed_at is None else self.closed_at - self.changed_at
        )

    @property
    def accepted_after_change(self) -> int:
        """Requests with the revoked credentials that got a 200."""
        return sum(1 for start in self.probe.accepted_at if start > self.changed_at)

    def report(self, change: str, bound: str) -> str:
        """One line of figures, printed by each test."""
        after = self.accepted_after_change
        before = len(self.probe.accepted_at) - after
        return (
            f"\n{change}: HTTP refused {self.refused_after:.3f} s after "
            f"({after} requests accepted meanwhile, {before} before); socket "
            f"closed with {self.close_code} {self.closed_after:.3f} s after; "
            f"bound {bound}"
        )


async def revoke_while_probing(
    http: LiveServer,
    socket_on: LiveServer,
    shell_on: LiveServer,
    user: str,
    change: str,
) -> Outcome:
    """Use `user`'s token on `http` and hold their socket on `socket_on` while
    `shell_on`'s manage.py shell makes `change`; wait WAIT_AT_MOST for both."""
    probe = Probe()
    probing = asyncio.ensure_future(asyncio.to_thread(probe.run, http, user))
    connection = await open_connection(socket_on.websocket_url(user))
    watcher = asyncio.ensure_future(close_answering_pings(connection))
    try:
        # The token is in use (cached by `http`) before the change.
        assert await asyncio.to_thread(probe.accepted.wait, WAIT_AT_MOST)
        output = await asyncio.to_thread(
            shell_on.shell, SHELL_CHANGES[change].format(name=user)
        )
        at = changed_at(output)
        # Both: the 401 over HTTP, and the socket's close.
        await asyncio.wait(
            {probing, watcher}, timeout=max(0.0, at + WAIT_AT_MOST - time.time())
        )
    finally:
        probe.stop.set()
        await probing
        closed = watcher.done()
        watcher.cancel()
        await connection.close()
    code, closed_at = watcher.result() if closed else (None, None)
    return Outcome(at, probe, code, None if closed_at is None else _wall(closed_at))


def _wall(monotonic_time: float) -> float:
    """A time.monotonic() reading as wall-clock time."""
    return time.time() - (time.monotonic() - monotonic_time)


# Two instances on one Redis and one database ---------------------------------------


@pytest.fixture
def instances_on_one_database(
    redis_url, dedicated_asgi_server
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """A and B on one Redis (a key prefix of this test's own) and one database."""
    prefix = f"sync-e2e-{uuid.uuid4().hex[:12]}"
    env = {
        "REDIS_URL": redis_url,
        "SYNC_KEY_PREFIX": prefix,
        "SYNC_HEARTBEAT_INTERVAL": TWO_INSTANCE_HEARTBEAT,
        **UNTHROTTLED,
    }
    a = dedicated_asgi_server(**env)
    b = dedicated_asgi_server(**env, DATABASE_URL=f"sqlite:///{a.database}")
    yield a, b
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("change", "user"), [("token deleted", "alice"), ("user deactivated", "bob")]
)
async def test_a_revocation_made_elsewhere_is_refused_over_http_at_once(
    instances_on_one_database, change, user
):
    a, b = instances_on_one_database

    outcome = await revoke_while_probing(a, b, b, user, change)

    print(outcome.report(change, f"{REFUSED_WITHIN} s"))
    assert outcome.probe.accepted_at, "the token was never accepted before"
    assert outcome.close_code == 4401  # the baseline: the socket on B
    assert outcome.refused_after < REFUSED_WITHIN, (
        f"still accepted {WAIT_AT_MOST} s after the change"
    )
    assert outcome.probe.error_code == "authentication_failed"


# One instance, no Redis: a change no signal reaches ---------------------------------

HEARTBEAT_SECONDS = 2
# A cached token is trusted one heartbeat interval at most; a second of slack
# for a loaded machine.
UNSIGNALLED_REFUSED_WITHIN = HEARTBEAT_SECONDS + 1.0


async def test_a_change_no_signal_reaches_is_refused_within_one_heartbeat(
    dedicated_asgi_server,
):
    server = dedicated_asgi_server(
        SYNC_HEARTBEAT_INTERVAL=HEARTBEAT_SECONDS, **UNTHROTTLED
    )
    change = "user deactivated by update"

    outcome = await revoke_while_probing(server, server, server, "bob", change)

    print(outcome.report(change, f"{UNSIGNALLED_REFUSED_WITHIN} s"))
    assert outcome.probe.accepted_at, "the token was never accepted before"
    assert outcome.close_code == 4401  # the baseline: the heartbeat's re-check
    assert outcome.refused_after < UNSIGNALLED_REFUSED_WITHIN, (
        f"still accepted {WAIT_AT_MOST} s after the change"
    )
    assert outcome.probe.error_code == "authentication_failed"
