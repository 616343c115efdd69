"""What one client frame may cost (sync/ws/frame_limits.py): its size, and frames
per socket and per user across sockets (``SYNC_WS_USER_RATE_LIMIT``).
"""

from __future__ import annotations

import json

import pytest

from sync.services import get_realtime_sync
from sync.ws import frame_limits
from sync.ws.frame_limits import FrameVerdict, judge_frame
from tests.conftest import FakeClock
from tests.sync.ws.sockets import (
    SMALL_FRAME_LIMIT,
    SMALL_PAYLOAD_LIMIT,
    assert_error,
    assert_silent,
    frame_of_size,
    receive_close_code,
    receive_frame,
)

# A whole number of 10 s windows: the tests run inside one window.
START = 10 * 1_000_000.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch) -> FakeClock:
    clock = FakeClock(start=START)
    monkeypatch.setattr(frame_limits, "clock", clock)
    return clock


async def answer(ws, frame_id) -> dict:
    await ws.send_json_to({"type": "ping", "id": frame_id})
    return await ws.receive_json_from(1)


async def close_code(ws) -> int:
    output = await ws.receive_output(1)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def test_a_users_sockets_share_one_frame_budget(ws_connect, user, sync_config):
    sync_config(WS_RATE_LIMIT="100/10s", WS_USER_RATE_LIMIT="4/10s")
    first, _ = await ws_connect(user)
    second, _ = await ws_connect(user)

    answers = [await answer(ws, n) for n, ws in enumerate([first, second] * 2)]
    assert [frame["type"] for frame in answers] == ["pong"] * 4

    dropped = await answer(first, "fifth")
    assert dropped["type"] == "error"
    assert dropped["payload"]["code"] == "throttled"
    assert dropped["correlationId"] == "fifth"
    # A new socket of the same user starts with nothing left either.
    third, _ = await ws_connect(user)
    assert (await answer(third, "sixth"))["payload"]["code"] == "throttled"


async def test_twice_the_users_limit_closes_the_socket_that_sends(
    ws_connect, user, other_user, sync_config
):
    sync_config(WS_RATE_LIMIT="100/10s", WS_USER_RATE_LIMIT="2/10s")
    first, _ = await ws_connect(user)
    second, _ = await ws_connect(user)
    others, _ = await ws_connect(other_user)
    for ws in (first, first, second):
        await answer(ws, "spent")

    await second.send_json_to({"type": "chat.message", "payload": {}, "id": "4th"})

    assert await close_code(second) == 4429
    assert (await answer(others, "fine"))["type"] == "pong"  # other users unaffected
    assert get_realtime_sync().store.stats().total_messages == 0


async def test_the_users_budget_comes_back_in_the_next_window(
    ws_connect, user, sync_config, frozen_clock
):
    sync_config(WS_RATE_LIMIT="100/10s", WS_USER_RATE_LIMIT="2/10s")
    ws, _ = await ws_connect(user)
    answers = [(await answer(ws, n))["type"] for n in range(3)]
    assert answers == ["pong", "pong", "error"]
    frozen_clock.advance(10)
    assert (await answer(ws, 3))["type"] == "pong"


def test_the_verdict_weighs_the_socket_and_the_user(sync_config):
    sync_config(WS_RATE_LIMIT="3/10s", WS_USER_RATE_LIMIT="100/10s")
    verdicts = [judge_frame(count, "u1") for count in range(1, 7)]
    assert verdicts == [
        FrameVerdict.ACCEPT,
        FrameVerdict.ACCEPT,
        FrameVerdict.ACCEPT,
        FrameVerdict.DROP_FIRST,
        FrameVerdict.DROP,
        FrameVerdict.CLOSE,
    ]


# Through the whole stack: frames over the cap or the rate ---------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(frame_of_size(SMALL_FRAME_LIMIT + 1), id="text"),
        # Counted in bytes: 3000 two-byte characters are 6000 bytes.
        pytest.param(
            json.dumps(
                {"type": "todo", "payload": {"t": "é" * 3000}}, ensure_ascii=False
            ),
            id="multibyte-text",
        ),
        pytest.param(b"x" * (SMALL_FRAME_LIMIT + 1), id="binary"),
    ],
)
async def test_a_frame_over_the_cap_closes_with_1009(
    ws_connect, user, sync_config, frame
):
    sync_config(MAX_PAYLOAD_BYTES=SMALL_PAYLOAD_LIMIT)
    ws, _ = await ws_connect(user)

    if isinstance(frame, bytes):
        await ws.send_to(bytes_data=frame)
    else:
        await ws.send_to(text_data=frame)

    assert await receive_close_code(ws) == 1009
    assert get_realtime_sync().store.stats().total_messages == 0


async def test_frames_beyond_the_rate_are_throttled_then_twice_it_closes_4429(
    ws_connect, user, sync_config
):
    sync_config(WS_RATE_LIMIT="5/10s")
    ws, _ = await ws_connect(user)

    for number in range(5):
        await ws.send_json_to({"type": "ping", "id": number})
    for number in range(5, 9):
        await ws.send_json_to({"type": "chat.message", "id": number})

    for number in range(5):
        assert (await receive_frame(ws))["correlationId"] == number
    for _ in range(5, 9):
        frame = await receive_frame(ws)
        assert frame["type"] == "error"
        assert frame["payload"]["code"] == "throttled"
    await assert_silent(ws)
    # The throttled messages were dropped, not delivered.
    assert get_realtime_sync().store.stats().total_messages == 0
    await ws.send_json_to({"type": "ping", "id": "tenth"})
    assert await receive_close_code(ws) == 4429


async def test_a_throttled_error_carries_the_frames_correlation_id(
    ws_connect, user, sync_config
):
    sync_config(WS_RATE_LIMIT="2/10s")
    ws, _ = await ws_connect(user)
    for number in range(2):
        await ws.send_json_to({"type": "ping", "id": number})
        await receive_frame(ws)

    await ws.send_json_to({"type": "ping", "id": "dropped"})

    assert_error(await receive_frame(ws), "throttled", "dropped")


async def test_a_big_frame_dropped_over_the_rate_is_not_parsed(
    ws_connect, user, sync_config, monkeypatch
):
    # Each dropped frame was parsed in full to find its correlation: with
    # costly shapes, 600 parses per user every 10 s (hostile test).
    from sync.ws import frame_text

    sync_config(WS_RATE_LIMIT="3/10s")
    ws, _ = await ws_connect(user)
    for number in range(3):
        await ws.send_json_to({"type": "ping", "id": number})
        await receive_frame(ws)
    parsed = []
    loads = frame_text.loads_strict

    def counted(text):
        parsed.append(text)
        return loads(text)

    monkeypatch.setattr(frame_text, "loads_strict", counted)

    big = {"type": "chat.blob", "payload": {"a": [{}] * 2_000}, "id": "big"}
    await ws.send_json_to(big)
    await ws.send_json_to({"type": "ping", "id": "small"})

    assert_error(await receive_frame(ws), "throttled", None)
    assert_error(await receive_frame(ws), "throttled", "small")
    assert len(parsed) == 1  # the small one only
