"""The TypeScript client in client/: its Node tests and the committed build.

The JavaScript tests (``node --test``, fake WebSocket, fetch and clock) run
through npm; ``npm ci`` installs the pinned TypeScript first when
client/node_modules is missing. The build check compiles the source to a
temporary folder and compares it byte for byte with the committed
sync/static/sync/connection-manager.js and .d.ts, which Python-only users
serve without Node.js. Without node or npm these tests skip, unless
SYNC_REQUIRE_NODE=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLIENT = PROJECT_ROOT / "client"
COMMITTED_BUILD = PROJECT_ROOT / "sync" / "static" / "sync"
BUILD_FILES = ("connection-manager.js", "connection-manager.d.ts")
NODE_MODULES = CLIENT / "node_modules"
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"
NODE_TYPES = NODE_MODULES / "@types" / "node"
# npm ci downloads TypeScript on a fresh machine; the tests take seconds.
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 180

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT)


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `command` in client/, output captured (stderr into stdout)."""
    return subprocess.run(
        command,
        cwd=CLIENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def node_tools() -> dict[str, str]:
    """Paths of node and npm, with the client's dev dependencies installed."""
    tools = {name: shutil.which(name) for name in ("node", "npm")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        reason = f"{' and '.join(missing)} not on PATH: the JavaScript client tests"
        if os.environ.get("SYNC_REQUIRE_NODE") == "1":
            pytest.fail(f"SYNC_REQUIRE_NODE=1 but {reason} cannot run")
        pytest.skip(f"{reason} are skipped (install Node.js 18+ to run them)")
    if not (TSC.exists() and NODE_TYPES.exists()):
        install = [tools["npm"], "ci", "--no-audit", "--no-fund"]
        installed = run(install, INSTALL_TIMEOUT)
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}"
    return tools


def test_javascript_tests_pass(node_tools):
    """State machine, backoff, dedup, cursors, fallback: `npm test` passes."""
    result = run([node_tools["npm"], "test"], RUN_TIMEOUT)
    assert result.returncode == 0, f"npm test failed:\n{result.stdout}"
    assert "# fail 0" in result.stdout, result.stdout


def test_committed_build_matches_the_source(node_tools, tmp_path):
    """sync/static/sync/connection-manager.{js,d.ts} are tsc's output, as is."""
    tsc = [node_tools["node"], str(TSC), "-p", "tsconfig.json"]
    build = run([*tsc, "--outDir", str(tmp_path)], RUN_TIMEOUT)
    assert build.returncode == 0, f"tsc failed:\n{build.stdout}"
    stale = [
        name
        for name in BUILD_FILES
        if (tmp_path / name).read_bytes() != (COMMITTED_BUILD / name).read_bytes()
    ]
    assert not stale, (
        f"the committed build differs from the source ({', '.join(stale)}): "
        "run `cd client && npm run build` and commit the result"
    )
