"""Revocation (sync/services/revocation.py): what a socket of the user would
receive, what every process hears, and the re-check.

Most tests register a stand-in socket of the user with this process's hub,
as every open socket of that user is, and assert the revocation that would
close it (or that none arrives). With Redis, two store objects on one
prefix stand for two processes: what one publishes on the revocation
channel, the other's listener hears, and applies to its token cache and its
sockets. Model changes run in a worker thread, as in a server.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from unittest import mock

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from rest_framework.authtoken.models import Token

from sync.core.exceptions import StoreUnavailable
from sync.services import get_realtime_sync, reset_services, revocation
from sync.services.hub import DeliveryHub
from sync.services.revocation import (
    HeardRevocations,
    arevoke_token,
    arevoke_user,
)
from sync.services.token_cache import token_cache
from sync.store.redis import RedisMessageStore
from tests.sync.services.stand_in_sockets import (
    EVERY_SOCKET,
    NOTHING,
    deactivate,
    empty_token_cache,  # noqa: F401
    listen,
    next_event,
    token_for,
)


class Rollback(Exception):
    """Raised to roll a test transaction back."""


async def ais_still_authorized(user_id, token_key) -> bool:
    """What the heartbeat concludes for one socket."""
    revoked = await revocation.afind_revoked([(user_id, token_key)])
    return (user_id, token_key) not in revoked


# Transactions --------------------------------------------------------------------


async def test_a_rolled_back_deactivation_revokes_nothing(user):
    channel = await listen(user)

    @sync_to_async
    def deactivate_then_roll_back():
        with transaction.atomic():
            user.is_active = False
            user.save()
            raise Rollback

    with pytest.raises(Rollback):
        await deactivate_then_roll_back()

    assert await next_event(channel, timeout=0.1) == NOTHING


async def test_a_deactivation_revokes_once_committed(user):
    channel = await listen(user)

    @sync_to_async
    def deactivate_in_a_transaction():
        with transaction.atomic():
            user.is_active = False
            user.save()
            return async_to_sync(next_event)(channel, 0.1)

    before_commit = await deactivate_in_a_transaction()

    assert before_commit == NOTHING
    assert await next_event(channel) == EVERY_SOCKET


# Failures and the async twins ----------------------------------------------------


async def test_the_async_twins_send_at_once(user):
    channel = await listen(user)

    await arevoke_user(user.pk)
    await arevoke_token(user.pk, "abc")

    assert await next_event(channel) == EVERY_SOCKET
    assert await next_event(channel) == "abc"


# The heartbeat's re-check --------------------------------------------------------


async def test_a_session_socket_stays_authorized_while_the_user_is_active(user):
    assert await ais_still_authorized(user.pk, None) is True


async def test_deactivation_ends_authorization(user):
    key = await token_for(user)

    await deactivate(user)

    assert await ais_still_authorized(user.pk, None) is False
    assert await ais_still_authorized(user.pk, key) is False


async def test_deletion_ends_authorization(user):
    key = await token_for(user)
    user_id = user.pk

    await user.adelete()

    assert await ais_still_authorized(user_id, None) is False
    assert await ais_still_authorized(user_id, key) is False


async def test_deleting_the_token_ends_authorization_by_that_token(user):
    key = await token_for(user)
    assert await ais_still_authorized(user.pk, key) is True

    await Token.objects.filter(key=key).adelete()

    assert await ais_still_authorized(user.pk, key) is False
    assert await ais_still_authorized(user.pk, None) is True


async def test_a_token_of_another_user_does_not_authorize(user, other_user):
    other_key = await token_for(other_user)

    assert await ais_still_authorized(user.pk, other_key) is False


async def test_changes_without_signals_are_caught_by_the_re_check(
    user, django_user_model
):
    # QuerySet.update sends no signal: only the heartbeat notices.
    await django_user_model.objects.filter(pk=user.pk).aupdate(is_active=False)

    assert await ais_still_authorized(user.pk, None) is False


async def test_one_batched_check_finds_every_kind_of_revocation(
    user, other_user, django_user_model
):
    third = await django_user_model.objects.acreate(username="dave")
    alice_key, bob_key = await token_for(user), await token_for(other_user)
    third_key = await token_for(third)
    await Token.objects.filter(key=bob_key).adelete()
    await django_user_model.objects.filter(pk=third.pk).aupdate(is_active=False)
    credentials = [
        (user.pk, alice_key),  # fine
        (user.pk, None),  # fine: session
        (other_user.pk, bob_key),  # token deleted
        (other_user.pk, None),  # fine: still active
        (third.pk, third_key),  # deactivated
        (user.pk, third_key),  # someone else's token
    ]

    revoked = await revocation.afind_revoked(credentials)

    assert revoked == {
        (other_user.pk, bob_key),
        (third.pk, third_key),
        (user.pk, third_key),
    }


# Every process hears every revocation (the store's channel, with Redis) ----------


class RecordingListener:
    """Stands in for the service layer of one process: what it hears."""

    def __init__(self) -> None:
        self.revocations: list[tuple[str, str | None]] = []
        self.missed = 0

    def revoked(self, user_id: str, token_key: str | None) -> None:
        self.revocations.append((user_id, token_key))

    def revocations_missed(self) -> None:
        self.missed += 1


class RecordingSocket:
    """Stands in for a consumer registered with the hub."""

    def __init__(self) -> None:
        self.revoked_by: list[str | None] = []

    def revoke(self, token_key: str | None) -> None:
        self.revoked_by.append(token_key)


async def wait_for(condition, timeout: float = 3.0) -> None:
    """Until `condition()` holds (the listener runs in its own thread)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


@pytest.fixture
async def two_processes(redis_url) -> AsyncIterator[tuple[RedisMessageStore, ...]]:
    """Two store objects on one Redis prefix, as two server processes hold."""
    prefix = f"test:revoke:{uuid.uuid4().hex}:"
    stores = (
        RedisMessageStore(redis_url, prefix=prefix),
        RedisMessageStore(redis_url, prefix=prefix),
    )
    yield stores
    for store in stores:
        await store.aclose()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


async def hearing(store: RedisMessageStore) -> RecordingListener:
    """A listener for `store`'s revocations, once it is subscribed."""
    listener = RecordingListener()
    store.bus.hear_revocations(listener)
    await wait_for(lambda: listener.missed == 1)  # subscribed
    return listener


@pytest.mark.redis
async def test_a_process_hears_the_revocations_another_publishes(two_processes):
    here, elsewhere = two_processes
    listener = await hearing(here)

    await asyncio.to_thread(elsewhere.bus.publish_revocation, "7", "key-7")
    await elsewhere.bus.apublish_revocation("8", None)

    await wait_for(lambda: len(listener.revocations) == 2)
    assert listener.revocations == [("7", "key-7"), ("8", None)]


@pytest.mark.redis
async def test_a_malformed_revocation_is_ignored_and_the_listener_goes_on(
    two_processes, redis_url, caplog
):
    here, elsewhere = two_processes
    listener = await hearing(here)
    client = redis.Redis.from_url(redis_url)

    client.publish(here.bus.revoke_channel, "not json")
    client.publish(here.bus.revoke_channel, '{"user": 7}')
    client.close()
    await elsewhere.bus.apublish_revocation("7", None)

    await wait_for(lambda: listener.revocations == [("7", None)])
    assert listener.missed == 1  # never resubscribed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings.count("malformed revocation ignored") == 2


@pytest.mark.redis
async def test_a_lost_subscription_counts_as_missed_revocations(two_processes):
    here, elsewhere = two_processes
    listener = await hearing(here)

    here.bus._listener._pubsub.connection.disconnect()  # as if Redis dropped it
    await wait_for(lambda: listener.missed == 2)  # subscribed again
    await elsewhere.bus.apublish_revocation("7", None)

    await wait_for(lambda: listener.revocations == [("7", None)])


@pytest.mark.redis
async def test_deleting_a_token_tells_every_process_through_the_store(
    two_processes, user
):
    here, elsewhere = two_processes
    reset_services(here)
    listener = await hearing(elsewhere)
    key = await token_for(user)

    await Token.objects.filter(key=key).adelete()
    await deactivate(user)

    expected = [(str(user.pk), key), (str(user.pk), None)]
    await wait_for(lambda: listener.revocations == expected)


async def test_a_heard_revocation_forgets_cached_tokens_and_closes_sockets(
    user, other_user
):
    hub = DeliveryHub()
    socket = RecordingSocket()
    hub.add(socket, str(user.pk))
    heard = HeardRevocations(hub)
    tokens = {person.pk: await token_for(person) for person in (user, other_user)}
    for person in (user, other_user):
        generation = token_cache().generation()
        token_cache().put(tokens[person.pk], person, tokens[person.pk], generation)

    heard.revoked(str(user.pk), tokens[user.pk])
    assert token_cache().get(tokens[user.pk]) is None
    heard.revoked(str(other_user.pk), None)

    assert token_cache().get(tokens[other_user.pk]) is None
    assert socket.revoked_by == [tokens[user.pk]]
    assert len(token_cache()) == 0


async def test_missed_revocations_empty_the_token_cache(user):
    key = await token_for(user)
    token_cache().put(key, user, key, token_cache().generation())

    HeardRevocations(DeliveryHub()).revocations_missed()

    assert token_cache().get(key) is None


async def test_a_store_that_cannot_publish_does_not_fail_the_deletion(
    user, django_user_model, caplog
):
    bus = get_realtime_sync().store.bus
    refusing = mock.patch.object(
        bus, "publish_revocation", side_effect=StoreUnavailable()
    )

    with refusing:
        await user.adelete()

    assert not await django_user_model.objects.filter(pk=user.pk).aexists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("revocation not sent through the store" in w for w in warnings)
