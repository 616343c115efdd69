"""The broadcast history: every broadcast a person sends is recorded."""

from __future__ import annotations

import logging
from typing import Any

from sync.core.worker_threads import in_worker_thread

logger = logging.getLogger(__name__)


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


def mark_unpublished(message: dict[str, Any]) -> None:
    """Flag the record of `message`: the store refused it.

    Kept, not deleted: a store that failed after writing may still deliver
    it, and every broadcast must stay in the history. A failure here is
    logged, not raised, so the caller still sees the store's error.
    """
    from sync.models import Broadcast

    try:
        Broadcast.objects.filter(message_id=message["id"]).update(published=False)
    except Exception:
        logger.warning(
            "broadcast not flagged unpublished in the history",
            extra={"message_id": message["id"]},
            exc_info=True,
        )


async def amark_unpublished(message: dict[str, Any]) -> None:
    """Async twin of mark_unpublished."""
    await in_worker_thread(mark_unpublished)(message)
