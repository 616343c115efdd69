"""The bus between instances on one Redis (sync/store/redis_bus.py): waits
woken by another instance, its messages handed to this instance's hub.
"""

from __future__ import annotations

import asyncio

from tests.sync.store.messages import user_message
from tests.sync.waiting import until


def subscribed(store) -> bool:
    """The store's wake-up subscription is up (its SUBSCRIBE was sent)."""
    listener = store.bus._listener
    pubsub = listener._pubsub if listener is not None else None
    return pubsub is not None and pubsub.subscribed


def parked(store, user_id: str) -> bool:
    """A wait for `user_id` is parked in this store."""
    return bool(store._waiters._by_user.get(user_id))


async def test_a_wait_sees_a_message_published_on_another_instance(
    redis_store, twin_store
):
    position = await redis_store.ahead("1")
    waiting = asyncio.create_task(redis_store.wait_for_messages("1", position, 5))
    await until(lambda: subscribed(redis_store) and parked(redis_store, "1"))

    started = asyncio.get_running_loop().time()
    await twin_store.aadd_message(user_message("1", 1))

    assert await asyncio.wait_for(waiting, 3) is True
    assert asyncio.get_running_loop().time() - started < 0.5  # woken, not polled


async def test_a_wait_without_news_ends_at_its_timeout(redis_store, twin_store):
    position = await redis_store.ahead("1")
    await twin_store.aadd_message(user_message("2", 1))  # someone else's

    assert await redis_store.wait_for_messages("1", position, 0.3) is False


async def test_a_wait_survives_a_dropped_subscription(redis_store, twin_store):
    position = await redis_store.ahead("1")
    waiting = asyncio.create_task(redis_store.wait_for_messages("1", position, 5))
    await until(lambda: subscribed(redis_store) and parked(redis_store, "1"))
    listener = redis_store.bus._listener
    listener._pubsub.connection.disconnect()  # as if Redis dropped it

    await twin_store.aadd_message(user_message("1", 1))

    assert await asyncio.wait_for(waiting, 4) is True


class RecordingHub:
    """Stands in for the delivery hub: what other instances hand over."""

    def __init__(self) -> None:
        self.entries: list = []
        self.catch_ups = 0

    def dispatch_threadsafe(self, entry) -> None:
        self.entries.append(entry)

    def catch_up_all(self) -> None:
        self.catch_ups += 1


async def wait_for(condition, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def test_other_instances_messages_reach_this_instances_hub(
    redis_store, twin_store
):
    hub = RecordingHub()
    redis_store.bus.deliver_remote_to(hub)
    await wait_for(lambda: hub.catch_ups == 1)  # subscribed: catch up once

    sent = await twin_store.aadd_message(user_message("1", 1))
    await redis_store.aadd_message(user_message("1", 2))  # our own: not again
    await wait_for(lambda: hub.entries)
    await asyncio.sleep(0.05)  # time enough for our own to come back, if it did

    [entry] = hub.entries
    assert (entry.queue, entry.seq, entry.envelope) == (
        sent.queue,
        sent.seq,
        sent.envelope,
    )


async def test_a_lost_subscription_makes_every_socket_catch_up(redis_store, twin_store):
    hub = RecordingHub()
    redis_store.bus.deliver_remote_to(hub)
    await wait_for(lambda: hub.catch_ups == 1)

    redis_store.bus._listener._pubsub.connection.disconnect()  # as if Redis dropped it

    await wait_for(lambda: hub.catch_ups == 2)
