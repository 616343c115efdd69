"""What a client asks for on the connect URL (sync/ws/connect_params.py):
a bad cursor or bad topics close the socket 4400 after an error frame.
"""

from __future__ import annotations

import pytest

from tests.sync.ws.sockets import (
    SIXTY_FIVE_TOPICS,
    assert_error,
    receive_close_code,
    websocket_stats,
)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("cursor=garbage", "invalid_cursor", id="cursor-garbage"),
        pytest.param("cursor=ABC-1-2", "invalid_cursor", id="cursor-uppercase"),
        pytest.param("cursor=abc-1", "invalid_cursor", id="cursor-short"),
        pytest.param("topics=bad%20topic", "invalid_topics", id="topics-space"),
        pytest.param("topics=a:b", "invalid_topics", id="topics-colon"),
        pytest.param(
            "topics=" + ",".join(SIXTY_FIVE_TOPICS), "invalid_topics", id="65-topics"
        ),
    ],
)
async def test_bad_connection_parameters_close_with_4400_after_an_error(
    ws_connect, user, query, code
):
    ws, first = await ws_connect(user, query=query)

    assert_error(first, code)
    assert await receive_close_code(ws) == 4400
    assert websocket_stats()["activeConnections"] == 0
