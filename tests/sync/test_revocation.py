"""Revocation (SPEC §5): what a socket of the user would receive, and the re-check.

Each test listens on the user's group of the in-memory channel layer, as every
socket of that user does, and asserts the event that would close it (or that
none arrives). Model changes run in a worker thread, as in a server.
"""

from __future__ import annotations

import asyncio
import logging
from unittest import mock

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.authtoken.models import Token

from sync.services import revocation
from sync.services.groups import user_group
from sync.services.revocation import (
    REVOKE_EVENT,
    arevoke_token,
    arevoke_user,
)

EVERY_SOCKET = {"type": "sync.revoke", "token": None}


class Rollback(Exception):
    """Raised to roll a test transaction back."""


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    """Queues left by an earlier test belong to that test's (closed) event loop."""
    await get_channel_layer().flush()


@pytest.fixture(autouse=True)
def shared_layer():
    """Treat the in-memory layer as shared by other processes (as channels-redis
    is), so these tests hear what other processes would hear."""
    with mock.patch.object(
        revocation, "cross_process_layer", side_effect=get_channel_layer
    ):
        yield


async def listen(user) -> str:
    """A channel in the user's group: what one open socket of the user hears."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(user_group(user.pk), channel)
    return channel


async def next_event(channel: str, timeout: float = 1) -> dict | None:
    """The next event on `channel`, or None when nothing comes in time."""
    try:
        return await asyncio.wait_for(get_channel_layer().receive(channel), timeout)
    except TimeoutError:
        return None


async def ais_still_authorized(user_id, token_key) -> bool:
    """What the heartbeat concludes for one socket."""
    revoked = await revocation.afind_revoked([(user_id, token_key)])
    return (user_id, token_key) not in revoked


async def token_for(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


@sync_to_async
def deactivate(user) -> None:
    user.is_active = False
    user.save()


# Signals ------------------------------------------------------------------------


async def test_deactivating_a_user_revokes_every_socket(user):
    channel = await listen(user)

    await deactivate(user)

    assert await next_event(channel) == EVERY_SOCKET


async def test_saving_an_active_user_revokes_nothing(user):
    channel = await listen(user)
    user.first_name = "Alice"

    await user.asave()

    assert await next_event(channel, timeout=0.1) is None


async def test_deleting_a_user_revokes_every_socket(user):
    channel = await listen(user)

    await user.adelete()

    assert await next_event(channel) == EVERY_SOCKET


async def test_deleting_a_token_revokes_the_sockets_it_opened(user):
    key = await token_for(user)
    channel = await listen(user)

    await Token.objects.filter(key=key).adelete()

    assert await next_event(channel) == {"type": REVOKE_EVENT, "token": key}


async def test_a_revocation_reaches_only_that_user(user, other_user):
    channel = await listen(other_user)

    await deactivate(user)
    await user.adelete()

    assert await next_event(channel, timeout=0.1) is None


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

    assert await next_event(channel, timeout=0.1) is None


async def test_a_deactivation_revokes_once_committed(user):
    channel = await listen(user)

    @sync_to_async
    def deactivate_in_a_transaction():
        with transaction.atomic():
            user.is_active = False
            user.save()
            return async_to_sync(next_event)(channel, 0.1)

    before_commit = await deactivate_in_a_transaction()

    assert before_commit is None
    assert await next_event(channel) == EVERY_SOCKET


# Failures and the async twins ----------------------------------------------------


async def test_a_failing_channel_layer_does_not_fail_the_deletion(
    user, django_user_model, caplog
):
    broken = mock.Mock(group_send=mock.AsyncMock(side_effect=OSError("no redis")))

    with mock.patch.object(revocation, "cross_process_layer", return_value=broken):
        await user.adelete()

    assert not await django_user_model.objects.filter(pk=user.pk).aexists()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("revocation not sent" in r.getMessage() for r in warnings)


async def test_the_async_twins_send_at_once(user):
    channel = await listen(user)

    await arevoke_user(user.pk)
    await arevoke_token(user.pk, "abc")

    assert await next_event(channel) == EVERY_SOCKET
    assert await next_event(channel) == {"type": REVOKE_EVENT, "token": "abc"}


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
