"""WebSocket routes (sync/ws/routing.py): ``/ws`` and ``/ws/``."""

from __future__ import annotations

import pytest

from tests.sync.ws.sockets import (
    assert_established,
)


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_both_paths_serve_the_endpoint(ws_connect, user, path):
    _, first = await ws_connect(user, path=path)

    assert_established(first, user, recovered=None)
