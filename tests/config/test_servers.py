"""The command lines config/servers.py runs the ASGI servers with."""

from __future__ import annotations

import pytest

from config.servers import server_command


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_uvicorn_runs_with_its_concurrency_and_keep_alive_limits():
    default = server_command("uvicorn", "127.0.0.1", 5000, env={})
    raised = server_command(
        "uvicorn", "127.0.0.1", 5000, env={"SYNC_LIMIT_CONCURRENCY": "30000"}
    )

    assert option(default, "--limit-concurrency") == "20000"
    assert option(raised, "--limit-concurrency") == "30000"
    assert option(default, "--timeout-keep-alive") == "5"
    assert option(default, "--http") == "httptools"  # the protocol we patch


def test_a_bad_concurrency_limit_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="SYNC_LIMIT_CONCURRENCY"):
        server_command(
            "uvicorn", "127.0.0.1", 5000, env={"SYNC_LIMIT_CONCURRENCY": "x"}
        )
