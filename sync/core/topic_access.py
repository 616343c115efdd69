"""Who may follow which topic: the SYNC_TOPIC_AUTHORIZER hook of SPEC §3.

Topics are plain filters unless the project names an authorizer, a dotted
path to ``f(user, topic) -> bool``. It is asked for every topic of every
subscription (HTTP ``topics=``, WebSocket connect URL and subscribe frames);
one refused topic refuses the whole request with ``forbidden_topic``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from sync.core.conf import sync_settings
from sync.core.exceptions import ForbiddenTopic

TopicAuthorizer = Callable[[Any, str], bool]


@functools.lru_cache(maxsize=16)
def _load(path: str) -> TopicAuthorizer:
    # Cached by path, so a changed setting (tests, late configuration) is
    # honoured while the import itself happens once.
    return import_string(path)


def get_topic_authorizer() -> TopicAuthorizer | None:
    """The configured authorizer, or None when every topic is open."""
    path = sync_settings.TOPIC_AUTHORIZER
    return _load(path) if path else None


def authorize_topics(user: Any, topics: Iterable[str]) -> None:
    """Raise ForbiddenTopic for the first topic the authorizer refuses."""
    authorizer = get_topic_authorizer()
    if authorizer is None:
        return
    for topic in topics:
        if not authorizer(user, topic):
            raise ForbiddenTopic(
                f"You may not subscribe to topic {topic!r}.",
                details={"topic": topic},
            )


async def aauthorize_topics(user: Any, topics: Iterable[str]) -> None:
    """authorize_topics from async code.

    The authorizer may query the database, so it runs in the sync thread;
    without an authorizer, or without topics, no thread is involved at all.
    """
    topics = tuple(topics)
    if topics and get_topic_authorizer() is not None:
        await sync_to_async(authorize_topics)(user, topics)
