"""Signal receivers (sync/signals.py): deactivating or deleting a user, or
deleting a token, revokes the sockets concerned, and saving revokes nothing.
"""

from __future__ import annotations

from rest_framework.authtoken.models import Token

from tests.sync.services.stand_in_sockets import (
    EVERY_SOCKET,
    NOTHING,
    deactivate,
    empty_token_cache,  # noqa: F401
    listen,
    next_event,
    token_for,
)

# Signals ------------------------------------------------------------------------


async def test_deactivating_a_user_revokes_every_socket(user):
    channel = await listen(user)

    await deactivate(user)

    assert await next_event(channel) == EVERY_SOCKET


async def test_saving_an_active_user_revokes_nothing(user):
    channel = await listen(user)
    user.first_name = "Alice"

    await user.asave()

    assert await next_event(channel, timeout=0.1) == NOTHING


async def test_deleting_a_user_revokes_every_socket(user):
    channel = await listen(user)

    await user.adelete()

    assert await next_event(channel) == EVERY_SOCKET


async def test_deleting_a_token_revokes_the_sockets_it_opened(user):
    key = await token_for(user)
    channel = await listen(user)

    await Token.objects.filter(key=key).adelete()

    assert await next_event(channel) == key


async def test_a_revocation_reaches_only_that_user(user, other_user):
    channel = await listen(other_user)

    await deactivate(user)
    await user.adelete()

    assert await next_event(channel, timeout=0.1) == NOTHING
