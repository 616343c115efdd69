"""Fixtures running a real daphne process (see tests/support/live_server.py).

``daphne_server(**env)`` returns a server for those environment overrides;
tests asking for the same ``env`` share one server for the whole session.
``dedicated_daphne_server(**env)`` starts a server nobody else uses (for tests
that stop it, restart it, or count exactly what it holds), stopped at the end
of the test. A server that fails to start fails the test with daphne's log.

Every server can be restarted on the same port and database
(``server.restart()``: SIGTERM, wait for the exit, start again), and runs
management commands on its database from another process
(``server.shell(code)``, ``server.create_users(...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_server import (
    DaphneServer,
    ServerFailed,
    TemplateDatabase,
    prepare_template_database,
    start_daphne,
)


def start_or_fail(
    template: TemplateDatabase, directory: Path, overrides: dict[str, str]
) -> DaphneServer:
    try:
        return start_daphne(template, directory, overrides)
    except ServerFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def e2e_template_database(tmp_path_factory) -> TemplateDatabase:
    """Migrate once per session (slow), with alice, bob and staff carol."""
    return prepare_template_database(tmp_path_factory.mktemp("e2e-template"))


@pytest.fixture(scope="session")
def daphne_server(
    e2e_template_database, tmp_path_factory
) -> Iterator[Callable[..., DaphneServer]]:
    """Factory: ``daphne_server(SYNC_HEARTBEAT_INTERVAL=1)`` -> a running server.

    Servers are cached by their environment overrides for the whole session.
    """
    servers: dict[tuple[tuple[str, str], ...], DaphneServer] = {}

    def get(**env: Any) -> DaphneServer:
        key = tuple(sorted((name, str(value)) for name, value in env.items()))
        if key not in servers:
            directory = tmp_path_factory.mktemp("e2e-server")
            servers[key] = start_or_fail(e2e_template_database, directory, dict(key))
        server = servers[key]
        if server.process.poll() is not None:
            pytest.fail(f"daphne (env {dict(key)}) has died:\n{server.log()}")
        return server

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def server(daphne_server) -> DaphneServer:
    """The server with the embedded defaults and no overrides."""
    return daphne_server()


@pytest.fixture
def dedicated_daphne_server(
    e2e_template_database, tmp_path_factory
) -> Iterator[Callable[..., DaphneServer]]:
    """Factory: a new, unshared server per call, stopped when the test ends.

    For tests that stop the server themselves, or that need figures (such as
    connection counts) no other test can have touched.
    """
    started: list[DaphneServer] = []

    def start(**env: Any) -> DaphneServer:
        directory = tmp_path_factory.mktemp("e2e-dedicated-server")
        overrides = {name: str(value) for name, value in env.items()}
        started.append(start_or_fail(e2e_template_database, directory, overrides))
        return started[-1]

    yield start
    for server in started:
        server.stop()
