"""A socket that finishes connecting once shutdown has begun (SPEC §5).

The hub closes every registered socket with 1001 when shutdown begins; a
socket registering a moment later must be closed with 1001 too, not left for
the ASGI server to cut (uvicorn closes it with 1012). Found by the
two-instance soak.
"""

from __future__ import annotations

import pytest

from sync.services import lifecycle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_shutdown():
    lifecycle.reset()
    yield
    lifecycle.reset()


async def test_a_socket_connecting_during_shutdown_is_closed_with_1001(
    ws_connect, user
):
    lifecycle.begin_shutdown()

    ws, first = await ws_connect(user)

    assert first is None  # closed before connection.established
    assert ws.close_frame == {"type": "websocket.close", "code": 1001}
