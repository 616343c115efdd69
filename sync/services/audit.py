"""The broadcast history: every broadcast a person sends is recorded."""

from __future__ import annotations

from typing import Any

from sync.worker_threads import in_worker_thread


def record_broadcast(message: dict[str, Any], sent_by: Any, source: str) -> None:
    """Store who sent `message`, from where; the admin lists these."""
    # Imported here so the service layer can load before the app registry.
    from sync.models import Broadcast

    user = sent_by if getattr(sent_by, "pk", None) is not None else None
    Broadcast.objects.create(
        message_id=message["id"],
        type=message["type"],
        payload=message["payload"],
        topics=list(message["topics"]),
        sent_by=user,
        sent_by_username=user.get_username() if user else "",
        source=source,
    )


async def arecord_broadcast(message: dict[str, Any], sent_by: Any, source: str) -> None:
    """Async twin of record_broadcast: the insert runs in a worker thread."""
    await in_worker_thread(record_broadcast)(message, sent_by, source)


def forget_broadcast(message: dict[str, Any]) -> None:
    """Remove the record of `message`, which was not published after all.

    Its sender got an error (the store was out of reach): the history lists
    what was published, not what was attempted.
    """
    from sync.models import Broadcast

    Broadcast.objects.filter(message_id=message["id"]).delete()


async def aforget_broadcast(message: dict[str, Any]) -> None:
    """Async twin of forget_broadcast."""
    await in_worker_thread(forget_broadcast)(message)
