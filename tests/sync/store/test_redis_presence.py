"""The server instances on one Redis (sync/store/redis_presence.py): each
other's sockets, until one falls silent or stops.
"""

from __future__ import annotations

import asyncio


async def test_instances_count_each_others_sockets_until_one_falls_silent(
    redis_store, twin_store, clock
):
    await redis_store.presence.areport_connections(
        "a", active=3, subscriptions=2, opened=5
    )
    await twin_store.presence.areport_connections(
        "b", active=1, subscriptions=0, opened=4
    )

    seen_by_b = await twin_store.presence.aconnections_elsewhere("b")
    assert (seen_by_b.active, seen_by_b.subscriptions, seen_by_b.opened) == (3, 2, 9)
    assert twin_store.presence.connections_elsewhere("b") == seen_by_b

    clock.advance(16)  # a stopped reporting: taken for dead
    await twin_store.presence.areport_connections(
        "b", active=1, subscriptions=0, opened=0
    )
    seen_later = await twin_store.presence.aconnections_elsewhere("b")
    assert (seen_later.active, seen_later.opened) == (0, 9)


async def test_a_stopping_instance_leaves_the_figures_at_once(redis_store, twin_store):
    await redis_store.presence.areport_connections(
        "a", active=3, subscriptions=0, opened=3
    )
    await asyncio.to_thread(redis_store.presence.forget_connections, "a")

    assert (await twin_store.presence.aconnections_elsewhere("b")).active == 0
