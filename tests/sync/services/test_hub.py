"""The per-process delivery hub (sync/services/hub.py): encode once, hand to the
right local sockets.
"""

from __future__ import annotations

import json
import threading

from sync.services.hub import DeliveryHub, EncodedMessage
from sync.store.memory import MemoryMessageStore
from tests.sync.waiting import until


class Socket:
    """A stand-in subscriber that records what the hub hands it."""

    def __init__(self, fail: bool = False) -> None:
        self.received: list[EncodedMessage] = []
        self.fail = fail

    def on_message(self, message: EncodedMessage) -> None:
        if self.fail:
            raise RuntimeError("broken socket")
        self.received.append(message)


def stored(store: MemoryMessageStore, user_id: str | None, topics=()):
    return store.add_message(
        {
            "id": f"msg_{store.stats().total_messages}",
            "type": "note",
            "payload": {"text": 'héllo "quoted"'},
            "userId": user_id,
            "topics": list(topics),
            "correlationId": None,
        }
    )


async def test_the_frame_is_the_envelope_with_the_readers_cursor():
    entry = stored(MemoryMessageStore(), "7")
    frame = EncodedMessage(entry).text_for("ab12-3-4")

    polled = {**entry.envelope, "cursor": "ab12-3-4"}  # what a poll answers
    assert json.loads(frame) == polled
    assert list(json.loads(frame)) == list(polled)  # in the same key order


async def test_user_messages_reach_only_that_users_sockets():
    hub, store = DeliveryHub(), MemoryMessageStore()
    alice_tabs, bob = [Socket(), Socket()], Socket()
    for tab in alice_tabs:
        hub.add(tab, "1")
    hub.add(bob, "2")

    assert hub.dispatch(stored(store, "1")) == 2
    assert [len(tab.received) for tab in alice_tabs] == [1, 1]
    assert bob.received == []


async def test_a_broadcast_is_encoded_once_for_every_socket():
    hub, store = DeliveryHub(), MemoryMessageStore()
    sockets = [Socket() for _ in range(5)]
    for number, socket in enumerate(sockets):
        hub.add(socket, str(number))

    hub.dispatch(stored(store, None, topics=["ops"]))

    # Topic broadcasts reach everyone: readers that do not follow the topic
    # note the sequence number and move on.
    frames = {id(socket.received[0]) for socket in sockets}
    assert len(frames) == 1


async def test_one_broken_socket_does_not_cost_the_others_their_message(caplog):
    hub, store = DeliveryHub(), MemoryMessageStore()
    healthy = Socket()
    hub.add(Socket(fail=True), "1")
    hub.add(healthy, "1")

    hub.dispatch(stored(store, "1"))

    assert len(healthy.received) == 1
    assert "delivery to one socket failed" in caplog.text


async def test_a_publish_from_another_thread_is_delivered_on_the_loop():
    hub, store = DeliveryHub(), MemoryMessageStore()
    socket = Socket()
    hub.add(socket, "1")
    threads: list[int] = []
    original = socket.on_message

    def record(message):
        threads.append(threading.get_ident())
        original(message)

    socket.on_message = record
    worker = threading.Thread(
        target=hub.dispatch_threadsafe, args=(stored(store, "1"),)
    )
    worker.start()
    worker.join()
    await until(lambda: threads)

    assert threads == [threading.get_ident()]


async def test_removed_sockets_receive_nothing():
    hub, store = DeliveryHub(), MemoryMessageStore()
    socket = Socket()
    hub.add(socket, "1")
    hub.remove(socket, "1")
    hub.remove(socket, "1")  # twice is fine

    assert hub.dispatch(stored(store, None)) == 0
    assert hub.socket_count == 0


async def test_shutdown_closes_every_socket_with_1001():
    hub = DeliveryHub()

    class Closing(Socket):
        def close_now(self, code: int) -> None:
            self.closed_with = code

    sockets = [Closing(), Closing()]
    for number, socket in enumerate(sockets):
        hub.add(socket, str(number))

    hub.close_all(1001)

    assert [socket.closed_with for socket in sockets] == [1001, 1001]
