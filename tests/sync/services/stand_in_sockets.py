"""A stand-in for a user's open socket, registered with this process's hub:
the revocations it would receive.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from rest_framework.authtoken.models import Token

from sync.services import get_realtime_sync
from sync.services.token_cache import token_cache

EVERY_SOCKET = None  # revoke(None): every socket of the user
NOTHING = "nothing came"


@pytest.fixture(autouse=True)
def empty_token_cache():
    token_cache().clear()
    yield
    token_cache().clear()


class SocketOfUser:
    """Stands for one open socket of a user, as the hub sees it."""

    def __init__(self) -> None:
        self.revocations: asyncio.Queue[str | None] = asyncio.Queue()

    def on_message(self, message) -> bool:
        return False

    def close_now(self, code: int) -> None:
        pass

    def revoke(self, token_key: str | None) -> None:
        self.revocations.put_nowait(token_key)

    async def catch_up_if_behind(self) -> None:
        pass


async def listen(user) -> SocketOfUser:
    """A socket of the user, registered with this process's hub."""
    socket = SocketOfUser()
    get_realtime_sync().hub.add(socket, str(user.pk))
    return socket


async def next_event(socket: SocketOfUser, timeout: float = 1) -> str | None:
    """The next revocation the socket got (its token key, None for every
    socket of the user), or NOTHING when none comes in time."""
    try:
        return await asyncio.wait_for(socket.revocations.get(), timeout)
    except TimeoutError:
        return NOTHING


async def token_for(user) -> str:
    token, _ = await Token.objects.aget_or_create(user=user)
    return token.key


@sync_to_async
def deactivate(user) -> None:
    user.is_active = False
    user.save()
