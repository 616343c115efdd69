"""Frames per user across sockets (``SYNC_WS_USER_RATE_LIMIT``), per socket too."""

from __future__ import annotations

import pytest

from sync.services import get_realtime_sync
from sync.ws import frame_limits
from sync.ws.frame_limits import FrameVerdict, judge_frame
from tests.conftest import FakeClock

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
